// Command herald is the one Herald binary: the Kubernetes operator, the broker, and a small CLI
// over the broker's HTTP API. Run `herald help` for the subcommands.
package main

import (
	"os"

	"github.com/heraldmq/herald/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
