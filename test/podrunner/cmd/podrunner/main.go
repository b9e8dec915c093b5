// Command podrunner runs the Herald pod runner (test/podrunner) against an existing API server:
// it registers a Node and runs the Pods scheduled to it whose image is Herald's as local
// processes of --herald-binary. Stop it with Ctrl-C (or SIGTERM): it stops every process.
//
//	go run ./test/podrunner/cmd/podrunner --kubeconfig .dev/kubeconfig --herald-binary bin/herald --state-dir /tmp/node
//
// Usually `make dev` (test/cluster/cmd/herald-dev) starts it together with the control plane.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/heraldmq/herald/test/podrunner"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server (an administrator's)")
	binary := flag.String("herald-binary", "bin/herald", "the herald executable the containers run as")
	state := flag.String("state-dir", "", "folder of the pods, volumes, hosts files and logs (required)")
	node := flag.String("node-name", "herald-node", "name of the Node")
	images := flag.String("images", strings.Join(podrunner.DefaultImages, ","), `comma-separated image repositories run as --herald-binary ("*/herald": any repository named herald)`)
	verbose := flag.Bool("v", false, "log the runner's activity")
	flag.Parse()
	if *state == "" || *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "podrunner: --state-dir and --kubeconfig (or KUBECONFIG) are required")
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podrunner:", err)
		os.Exit(1)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	r, err := podrunner.New(podrunner.Options{
		Config:       cfg,
		HeraldBinary: *binary,
		StateDir:     *state,
		NodeName:     *node,
		Images:       strings.Split(*images, ","),
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := r.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		r.Stop()
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "podrunner: node %s ready; state in %s\n", r.NodeName(), r.StateDir())
	<-ctx.Done()
	r.Stop()
}
