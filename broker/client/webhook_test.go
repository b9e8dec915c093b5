package client_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/heraldmq/herald/broker/client"
)

// The example of the Standard Webhooks specification and reference libraries.
const (
	swSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	swTimestamp = "1614265330"
	swBody      = `{"test": 2432232314}`
	swSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func swHeaders(sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", swID)
	h.Set("webhook-timestamp", swTimestamp)
	h.Set("webhook-signature", sig)
	return h
}

func TestVerifyWebhookSpecExample(t *testing.T) {
	if err := client.VerifyWebhook([]string{swSecret}, swHeaders(swSignature), []byte(swBody), -1); err != nil {
		t.Fatalf("spec example: %v", err)
	}
	// Several signatures (rotation), unknown versions ignored.
	if err := client.VerifyWebhook([]string{swSecret}, swHeaders("v1a,abc v1,AAAA "+swSignature), []byte(swBody), -1); err != nil {
		t.Errorf("with other signatures: %v", err)
	}
	// The timestamp is from 2021: outside any sane tolerance.
	if err := client.VerifyWebhook([]string{swSecret}, swHeaders(swSignature), []byte(swBody), 0); !errors.Is(err, client.ErrWebhookTimestamp) {
		t.Errorf("stale timestamp: %v", err)
	}
	for name, tc := range map[string]struct {
		secrets []string
		h       http.Header
		body    string
		want    error
	}{
		"tampered body":    {[]string{swSecret}, swHeaders(swSignature), `{"test": 2432232315}`, client.ErrWebhookSignature},
		"other secret":     {[]string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("nope"))}, swHeaders(swSignature), swBody, client.ErrWebhookSignature},
		"no signature":     {[]string{swSecret}, swHeaders(""), swBody, client.ErrWebhookMissingHeaders},
		"v1a only":         {[]string{swSecret}, swHeaders("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="), swBody, client.ErrWebhookSignature},
		"no secrets":       {nil, swHeaders(swSignature), swBody, client.ErrWebhookNoSecret},
		"bad timestamp":    {[]string{swSecret}, func() http.Header { h := swHeaders(swSignature); h.Set("webhook-timestamp", "soon"); return h }(), swBody, client.ErrWebhookTimestamp},
		"changed id":       {[]string{swSecret}, func() http.Header { h := swHeaders(swSignature); h.Set("webhook-id", "msg_x"); return h }(), swBody, client.ErrWebhookSignature},
		"changed ts":       {[]string{swSecret}, func() http.Header { h := swHeaders(swSignature); h.Set("webhook-timestamp", "1614265331"); return h }(), swBody, client.ErrWebhookSignature},
		"second secret ok": {[]string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("old")), swSecret}, swHeaders(swSignature), swBody, nil},
	} {
		err := client.VerifyWebhook(tc.secrets, tc.h, []byte(tc.body), -1)
		if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestVerifyWebhookTolerance(t *testing.T) {
	secret := "plain-secret-bytes"
	sign := func(ts time.Time) http.Header {
		tss := strconv.FormatInt(ts.Unix(), 10)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte("id1." + tss + ".body"))
		h := http.Header{}
		h.Set("webhook-id", "id1")
		h.Set("webhook-timestamp", tss)
		h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		return h
	}
	if err := client.VerifyWebhook([]string{secret}, sign(time.Now()), []byte("body"), 0); err != nil {
		t.Errorf("fresh: %v", err)
	}
	if err := client.VerifyWebhook([]string{secret}, sign(time.Now().Add(-10*time.Minute)), []byte("body"), 0); !errors.Is(err, client.ErrWebhookTimestamp) {
		t.Errorf("10 minutes old with the default tolerance: %v", err)
	}
	if err := client.VerifyWebhook([]string{secret}, sign(time.Now().Add(10*time.Minute)), []byte("body"), time.Hour); err != nil {
		t.Errorf("10 minutes ahead, tolerance 1h: %v", err)
	}
	if err := client.VerifyWebhook([]string{"whsec_!!"}, sign(time.Now()), []byte("body"), 0); err == nil {
		t.Errorf("a malformed whsec_ secret was accepted")
	}
}
