package hostsfile

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := "# comment\n127.0.0.2 demo-0.demo-headless.ns.svc demo-0.demo-headless.ns.svc.cluster.local.\n\nbogus line\n127.0.0.3 Demo.NS.svc # trailing\n127.0.0.4 demo.ns.svc\n"
	got := Parse(strings.NewReader(in))
	cases := map[string]string{
		"demo-0.demo-headless.ns.svc":               "[127.0.0.2]",
		"demo-0.demo-headless.ns.svc.cluster.local": "[127.0.0.2]",
		"demo.ns.svc": "[127.0.0.3 127.0.0.4]",
		"bogus":       "[]",
	}
	for name, want := range cases {
		if fmt.Sprint(got[name]) != want {
			t.Errorf("%s: got %v want %s", name, got[name], want)
		}
	}
}

func TestDialThroughHostsFile(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	path := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(path, []byte("127.0.0.1 broker.ns.svc\n"), 0o644)
	tab := New(path)
	d := &net.Dialer{}
	tr := &http.Transport{DialContext: tab.DialContext(d.DialContext)}
	resp, err := (&http.Client{Transport: tr}).Get("http://broker.ns.svc.:" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// A nil table (variable unset) leaves dialing alone.
	var none *Table
	if none.Lookup("broker.ns.svc") != nil {
		t.Fatal("nil table resolved a name")
	}
	if _, err := none.DialContext(d.DialContext)(context.Background(), "tcp", srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
}
