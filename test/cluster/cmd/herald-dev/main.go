// Command herald-dev runs Herald's local cluster for development (`make dev`, hack/dev.sh): etcd,
// kube-apiserver and kube-controller-manager (test/cluster) plus the pod runner that plays the
// node (test/podrunner), until Ctrl-C or SIGTERM, then stops all of it.
//
// In --dir (default .dev) it writes:
//
//	kubeconfig        an administrator's kubeconfig (KUBECONFIG=.dev/kubeconfig kubectl ...)
//	herald-dev.pid    its process ID (its process group too when started with setsid)
//	ready             once everything is up: the API server's URL
//	cluster/          control plane files; cluster/logs/*.log
//	node/             the pod runner's state: pods/<ns>/<pod>/ (logs/, volumes/, <container>.pid),
//	                  volumes/ (PersistentVolumes), dns/*.hosts
//	logs/podrunner.log
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldmq/herald/test/cluster"
	"github.com/heraldmq/herald/test/podrunner"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "herald-dev:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".dev", "folder of the cluster's files (its cluster/, node/ and logs/ are recreated)")
	binary := flag.String("herald-binary", "bin/herald", "the herald executable the pods run as")
	assets := flag.String("assets", os.Getenv("KUBEBUILDER_ASSETS"), "folder of etcd, kube-apiserver, kube-controller-manager, kubectl (hack/build-control-plane.sh)")
	images := flag.String("images", strings.Join(podrunner.DefaultImages, ","), "comma-separated image repositories run as --herald-binary")
	output := flag.Bool("container-output", false, "also copy every pod process's output to standard error")
	flag.Parse()

	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	for _, sub := range []string{"cluster", "node", "logs", "ready", "kubeconfig"} {
		if err := os.RemoveAll(filepath.Join(abs, sub)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(abs, "logs"), 0o755); err != nil {
		return err
	}
	pidFile := filepath.Join(abs, "herald-dev.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	say("starting etcd, kube-apiserver and kube-controller-manager")
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{AssetsDir: *assets, Dir: filepath.Join(abs, "cluster")})
	if err != nil {
		return err
	}
	defer func() {
		say("stopping the control plane")
		if err := c.Stop(); err != nil {
			say("stopping the control plane: %v", err)
		}
	}()
	if err := c.WriteKubeconfig(filepath.Join(abs, "kubeconfig")); err != nil {
		return err
	}
	say("control plane up at %s (%s)", c.URL, time.Since(start).Round(100*time.Millisecond))

	logf, err := os.Create(filepath.Join(abs, "logs", "podrunner.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	o := podrunner.Options{
		Config:       c.Config,
		HeraldBinary: *binary,
		StateDir:     filepath.Join(abs, "node"),
		Images:       strings.Split(*images, ","),
		Logger:       slog.New(slog.NewTextHandler(logf, nil)),
	}
	if *output {
		o.ContainerOutput = os.Stderr
	}
	r, err := podrunner.New(o)
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		r.Stop()
		return err
	}
	defer func() {
		say("stopping the pods")
		r.Stop()
	}()
	if err := os.WriteFile(filepath.Join(abs, "ready"), []byte(c.URL+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(abs, "ready"))
	say("node %s ready; KUBECONFIG=%s", r.NodeName(), rel(filepath.Join(abs, "kubeconfig")))
	<-ctx.Done()
	stop()
	say("shutting down")
	return nil
}

func say(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "herald-dev: "+format+"\n", a...)
}

func rel(p string) string {
	wd, err := os.Getwd()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(wd, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}
