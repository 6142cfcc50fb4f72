// Command horizon is the split-horizon EDS federation controller.
//
//	horizon serve [flags]                  run the controller and xDS server
//	horizon create-remote-secret [flags]   print a remote Secret for a cluster
//	horizon status [flags]                 show what a running horizon knows
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
)

// usageError is a bad command line; it exits with status 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "horizon:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

const usage = `horizon — split-horizon EDS for multi-cluster meshes

Usage:
  horizon serve [flags]                  run the controller and its xDS server
  horizon create-remote-secret [flags]   print a remote Secret giving read access to a cluster
  horizon status [flags]                 show clusters, networks, gateways and proxies of a running horizon
  horizon help                           show this text

Run "horizon <command> --help" for a command's flags.
`

// parseFlags parses a command's flags; it reports help as done (false, nil), and a
// bad flag or a stray argument as a usage error.
func parseFlags(fs *pflag.FlagSet, args []string) (bool, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return false, nil
		}
		return false, usageError{err}
	}
	if fs.NArg() > 0 {
		return false, usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return true, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("a command is required")}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stderr)
	case "create-remote-secret":
		return createRemoteSecret(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCommand(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", args[0])}
	}
}
