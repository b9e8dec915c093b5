package podrunner

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logServer is the part of the kubelet API the API server proxies `kubectl logs` to:
// GET /containerLogs/<namespace>/<pod>/<container>?follow=&previous=&tailLines=&limitBytes=.
// It listens on 127.0.0.1 with a self-signed certificate (the API server does not verify the
// kubelet's certificate unless --kubelet-certificate-authority is set).
type logServer struct {
	srv  *http.Server
	port int
}

func startLogServer(r *Runner) (*logServer, error) {
	cert, err := selfSigned()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", r.serveLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return &logServer{srv: srv, port: ln.Addr().(*net.TCPAddr).Port}, nil
}

func (s *logServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = s.srv.Close()
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "herald-podrunner"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func (r *Runner) serveLogs(rw http.ResponseWriter, req *http.Request) {
	ns, pod, container := req.PathValue("ns"), req.PathValue("pod"), req.PathValue("container")
	q := req.URL.Query()
	r.mu.Lock()
	w := r.byName[ns+"/"+pod]
	r.mu.Unlock()
	if w == nil {
		http.Error(rw, fmt.Sprintf("pod %s/%s is not running on node %s", ns, pod, r.o.NodeName), http.StatusNotFound)
		return
	}
	restarts, ok := w.restartCount(container)
	if !ok {
		http.Error(rw, fmt.Sprintf("container %q is not in pod %s/%s", container, ns, pod), http.StatusNotFound)
		return
	}
	previous := q.Get("previous") == "true"
	if previous {
		if restarts == 0 {
			http.Error(rw, fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod), http.StatusBadRequest)
			return
		}
		restarts--
	}
	f, err := os.Open(w.logPath(container, restarts))
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	if n, err := strconv.Atoi(q.Get("tailLines")); err == nil && n >= 0 {
		if off := tailOffset(f, n); off > 0 {
			_, _ = f.Seek(off, io.SeekStart)
		}
	}
	var out io.Writer = rw
	if n, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && n > 0 {
		out = &limitWriter{w: rw, n: n}
	}
	rw.Header().Set("Content-Type", "text/plain")
	if _, err := io.Copy(out, f); err != nil {
		return
	}
	if q.Get("follow") != "true" || previous {
		return
	}
	fl, _ := rw.(http.Flusher)
	for {
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-req.Context().Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
		if _, err := io.Copy(out, f); err != nil {
			return
		}
		if cur, ok := w.restartCount(container); !ok || cur != restarts {
			_, _ = io.Copy(out, f)
			return
		}
	}
}

func (w *worker) restartCount(container string) (int32, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range append(append([]*ctr{}, w.initCtrs...), w.ctrs...) {
		if c.spec.Name == container {
			return w.restartsPub[container], true
		}
	}
	return 0, false
}

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	return n, err
}

// tailOffset is the offset of the last n lines of f.
func tailOffset(f *os.File, n int) int64 {
	st, err := f.Stat()
	if err != nil {
		return 0
	}
	size := st.Size()
	if n == 0 {
		return size
	}
	buf := make([]byte, 32<<10)
	pos := size
	lines := 0
	// A final newline ends the last line rather than starting an empty one.
	skipLast := true
	for pos > 0 {
		chunk := int64(len(buf))
		if chunk > pos {
			chunk = pos
		}
		pos -= chunk
		if _, err := f.ReadAt(buf[:chunk], pos); err != nil && err != io.EOF {
			return 0
		}
		for i := chunk - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				skipLast = false
				continue
			}
			if skipLast {
				skipLast = false
				continue
			}
			lines++
			if lines == n {
				return pos + i + 1
			}
		}
	}
	return 0
}

// tailFile is the end of a log: at most maxLines lines and maxBytes bytes.
func tailFile(path string, maxLines, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	off := tailOffset(f, maxLines)
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size()-off > int64(maxBytes) {
		off = st.Size() - int64(maxBytes)
	}
	b := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(b, off)
	return strings.TrimRight(string(b[:n]), "\n")
}

// lineWriter copies a process's output to Options.ContainerOutput line by line, with a prefix.
type lineWriter struct {
	prefix string
	r      *Runner
	mu     sync.Mutex
	buf    []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.r.writeOutput(l.prefix, l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 {
		l.r.writeOutput(l.prefix, l.buf)
		l.buf = nil
	}
	return len(p), nil
}
