package resolver

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
)

// indexServer is the key the docker CLI stores Docker Hub credentials under.
const indexServer = "https://index.docker.io/v1/"

type credentials struct {
	file *configfile.ConfigFile
}

func loadCredentials(dir string) (*credentials, error) {
	if dir == "" {
		dir = config.Dir()
	}
	path := filepath.Join(dir, config.ConfigFileName)
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return &credentials{file: configfile.New(path)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDockerConfig, path, err)
	}
	defer f.Close()
	cf := configfile.New(path)
	if err := cf.LoadFromReader(f); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrDockerConfig, path, err)
	}
	return &credentials{file: cf}, nil
}

// lookup returns the username and secret for host, as containerd's
// authorizer wants them: an identity token is returned as the secret with
// an empty username.
func (c *credentials) lookup(host string) (string, string, error) {
	key := host
	if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
		key = indexServer
	}
	ac, err := c.file.GetAuthConfig(key)
	if err != nil {
		return "", "", fmt.Errorf("credentials for %s from %s: %w", host, c.file.Filename, err)
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}
