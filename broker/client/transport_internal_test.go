package client

import (
	"net/http"
	"testing"
)

func TestDefaultTransport(t *testing.T) {
	c, err := New("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if c.hc.Timeout != 0 {
		t.Errorf("http.Client.Timeout = %v: it would cut long polls; the client uses per-request deadlines", c.hc.Timeout)
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport is %T", c.hc.Transport)
	}
	if tr.MaxIdleConnsPerHost < 256 || tr.MaxIdleConns < tr.MaxIdleConnsPerHost || tr.DisableKeepAlives {
		t.Errorf("keep-alive pool too small: MaxIdleConnsPerHost=%d MaxIdleConns=%d DisableKeepAlives=%v",
			tr.MaxIdleConnsPerHost, tr.MaxIdleConns, tr.DisableKeepAlives)
	}
	if c.timeout != DefaultTimeout {
		t.Errorf("timeout = %v", c.timeout)
	}
	c2, _ := New("http://127.0.0.1:1", WithTimeout(0))
	if c2.hc != c.hc {
		t.Error("default clients do not share one connection pool")
	}
}
