package client

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultWebhookTolerance is how far a webhook-timestamp may be from the receiver's clock when
// VerifyWebhook is given a tolerance of 0 (Standard Webhooks recommends 5 minutes).
const DefaultWebhookTolerance = 5 * time.Minute

// Errors of VerifyWebhook (wrapped; test with errors.Is).
var (
	ErrWebhookNoSecret       = errors.New("webhook: no signing secret given")
	ErrWebhookMissingHeaders = errors.New("webhook: webhook-id, webhook-timestamp or webhook-signature header missing")
	ErrWebhookTimestamp      = errors.New("webhook: webhook-timestamp invalid or outside the tolerance")
	ErrWebhookSignature      = errors.New("webhook: no valid signature")
)

// VerifyWebhook checks that a push request was signed by the broker with one of secrets, per
// Standard Webhooks (https://www.standardwebhooks.com), which is what a push subscription with
// push.signingSecrets sends:
//
//	webhook-id:        the message id (the same on every delivery attempt)
//	webhook-timestamp: Unix seconds when this attempt was signed
//	webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")> [v1,<…> …]
//
// There is one signature per secret of the subscription, space-separated, so secrets rotate
// without downtime: add the new secret to the subscription, then to the receivers, then drop
// the old one. The request is valid if any signature matches any of secrets. Signatures of
// other versions (such as v1a) are ignored.
//
// A secret of the form whsec_<base64> has the base64-decoded bytes as its key, as in the
// Standard Webhooks libraries; any other secret is used as its bytes (such secrets work with
// Herald's signer and this function only: use whsec_ secrets to interoperate).
//
// body must be the raw request body, byte for byte, as received (read it before decoding it).
// tolerance bounds the difference between webhook-timestamp and the local clock, in both
// directions, against replays: 0 means DefaultWebhookTolerance, a negative value disables the
// check. The id is not remembered: a receiver that must reject replays within the tolerance
// keeps the ids it saw (they also deduplicate redeliveries).
//
// This is written apart from the broker's signer (broker/push) on purpose, from the
// specification, so that each checks the other.
func VerifyWebhook(secrets []string, headers http.Header, body []byte, tolerance time.Duration) error {
	if len(secrets) == 0 {
		return ErrWebhookNoSecret
	}
	id := headers.Get("webhook-id")
	tsText := headers.Get("webhook-timestamp")
	var sigs []string
	for _, v := range headers.Values("webhook-signature") {
		if strings.TrimSpace(v) != "" {
			sigs = append(sigs, v)
		}
	}
	if id == "" || tsText == "" || len(sigs) == 0 {
		return ErrWebhookMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrWebhookTimestamp, tsText)
	}
	if tolerance == 0 {
		tolerance = DefaultWebhookTolerance
	}
	if tolerance > 0 {
		skew := time.Since(time.Unix(ts, 0))
		if skew < -tolerance || skew > tolerance {
			return fmt.Errorf("%w: %s off the local clock (tolerance %s)", ErrWebhookTimestamp, skew.Round(time.Second), tolerance)
		}
	}
	// Collect the v1 signatures offered.
	var offered [][]byte
	for _, h := range sigs {
		for _, part := range strings.Fields(h) {
			version, value, ok := strings.Cut(part, ",")
			if !ok || version != "v1" {
				continue
			}
			if sig, err := base64.StdEncoding.DecodeString(value); err == nil {
				offered = append(offered, sig)
			}
		}
	}
	if len(offered) == 0 {
		return fmt.Errorf("%w: no v1 signature in webhook-signature", ErrWebhookSignature)
	}
	signed := make([]byte, 0, len(id)+len(tsText)+2+len(body))
	signed = append(signed, id...)
	signed = append(signed, '.')
	signed = append(signed, tsText...)
	signed = append(signed, '.')
	signed = append(signed, body...)
	for i, secret := range secrets {
		key, err := webhookKey(secret)
		if err != nil {
			return fmt.Errorf("webhook: secret %d: %w", i, err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		want := mac.Sum(nil)
		for _, sig := range offered {
			if hmac.Equal(sig, want) {
				return nil
			}
		}
	}
	return ErrWebhookSignature
}

// webhookKey turns a secret into its HMAC key (see VerifyWebhook).
func webhookKey(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, "whsec_") {
		if secret == "" {
			return nil, errors.New("empty secret")
		}
		return []byte(secret), nil
	}
	enc := secret[len("whsec_"):]
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(enc)
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New("a whsec_ secret must be whsec_ followed by standard base64")
	}
	return key, nil
}
