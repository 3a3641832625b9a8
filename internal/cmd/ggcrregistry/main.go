// Command ggcrregistry serves go-containerregistry's registry (pkg/registry),
// with the OCI 1.1 referrers API, as a process of its own on a loopback
// address: a registry implementation other than distribution, kept by
// others, for the end-to-end tests (registrytest.Start with
// Options.Impl = registrytest.GGCR). Blobs live in memory.
//
//	ggcrregistry -addr 127.0.0.1:PORT -id TOKEN
//
// Every answer carries X-Registrytest-Id: TOKEN, so that the tests tell it
// from another process on the port.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback `HOST:PORT` to listen on")
	id := flag.String("id", "", "value of the X-Registrytest-Id header")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "ggcrregistry: -addr %q: want a loopback HOST:PORT\n", *addr)
		os.Exit(2)
	}
	reg := registry.New(registry.WithReferrersSupport(true), registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{
		Addr: *addr,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Registrytest-Id", *id)
			reg.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 30 * time.Second,
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "ggcrregistry:", err)
		os.Exit(1)
	}
}
