package retry

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestPolicyDo(t *testing.T) {
	transient := errors.New("transient")
	fatal := errors.New("fatal")
	p := Policy{Retries: 3, Retryable: func(err error) bool { return errors.Is(err, transient) },
		Wait: func(error, int) time.Duration { return time.Millisecond }}
	for _, tc := range []struct {
		name     string
		fails    []error // what attempt i returns; nil after the list
		wantErr  error
		attempts int
	}{
		{"succeeds at once", nil, nil, 1},
		{"succeeds on the last retry", []error{transient, transient, transient}, nil, 4},
		{"gives up after Retries", []error{transient, transient, transient, transient, transient}, transient, 4},
		{"stops on what is not retryable", []error{transient, fatal, transient}, fatal, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := p.Do(context.Background(), "x", func(attempt int) error {
				if attempt != n {
					t.Errorf("attempt %d, want %d", attempt, n)
				}
				n++
				if attempt < len(tc.fails) {
					return tc.fails[attempt]
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) || n != tc.attempts {
				t.Errorf("Do = %v after %d attempts, want %v after %d", err, n, tc.wantErr, tc.attempts)
			}
		})
	}
	t.Run("a cancelled context ends the waiting", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		slow := Policy{Retries: 5, Wait: func(error, int) time.Duration { return time.Hour }}
		time.AfterFunc(20*time.Millisecond, cancel)
		err := slow.Do(ctx, "x", func(int) error { return transient })
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Do = %v, want context.Canceled", err)
		}
	})
}

func TestCountAndBackoff(t *testing.T) {
	zero, three := 0, 3
	if Count(nil) != Default || Count(&zero) != 0 || Count(&three) != 3 {
		t.Errorf("Count: nil %d, 0 %d, 3 %d", Count(nil), Count(&zero), Count(&three))
	}
	for a := 0; a < 20; a++ {
		if d := Backoff(a); d < backoffBase/2 || d > backoffMax {
			t.Errorf("Backoff(%d) = %v, outside [%v, %v]", a, d, backoffBase/2, backoffMax)
		}
	}
	if !TransientNetError(io.ErrUnexpectedEOF) || TransientNetError(errors.New("x")) {
		t.Error("TransientNetError: an unexpected EOF is transient, a plain error is not")
	}
}
