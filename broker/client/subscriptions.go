package client

import (
	"context"
	"net/http"
	"time"

	"github.com/heraldmq/herald/broker/api"
)

// PutSubscription creates the subscription or updates it to spec (PUT /v1/subscriptions/{sub};
// idempotent). created is true when the broker answered 201 Created.
func (c *Client) PutSubscription(ctx context.Context, name string, spec api.SubscriptionSpec) (sub api.Subscription, created bool, err error) {
	seg, err := segment("subscription", name)
	if err != nil {
		return api.Subscription{}, false, err
	}
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/subscriptions/" + seg, in: spec}, &sub)
	if err != nil {
		return api.Subscription{}, false, err
	}
	return sub, status == http.StatusCreated, nil
}

// GetSubscription returns the subscription with its stats (GET /v1/subscriptions/{sub}).
func (c *Client) GetSubscription(ctx context.Context, name string) (api.Subscription, error) {
	seg, err := segment("subscription", name)
	if err != nil {
		return api.Subscription{}, err
	}
	var s api.Subscription
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/subscriptions/" + seg}, &s); err != nil {
		return api.Subscription{}, err
	}
	return s, nil
}

// ListSubscriptions returns every subscription (GET /v1/subscriptions); never nil on success.
func (c *Client) ListSubscriptions(ctx context.Context) ([]api.Subscription, error) {
	var l api.SubscriptionList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/subscriptions"}, &l); err != nil {
		return nil, err
	}
	if l.Subscriptions == nil {
		l.Subscriptions = []api.Subscription{}
	}
	return l.Subscriptions, nil
}

// DeleteSubscription deletes the subscription (DELETE /v1/subscriptions/{sub}).
func (c *Client) DeleteSubscription(ctx context.Context, name string) error {
	seg, err := segment("subscription", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/subscriptions/" + seg}, nil)
	return err
}

// Pull leases up to req.Max messages (POST /v1/subscriptions/{sub}/pull). With req.Wait it long
// polls: the broker answers as soon as a message is there, or after the wait with none. The
// request's deadline is the client's timeout plus req.Wait, so a long poll is never cut short by
// it. Never nil on success.
func (c *Client) Pull(ctx context.Context, sub string, req api.PullRequest) ([]api.Message, error) {
	seg, err := segment("subscription", sub)
	if err != nil {
		return nil, err
	}
	var resp api.PullResponse
	r := request{method: http.MethodPost, path: "/v1/subscriptions/" + seg + "/pull", in: req, extra: max(req.Wait.D(), 0)}
	if _, err := c.do(ctx, r, &resp); err != nil {
		return nil, err
	}
	if resp.Messages == nil {
		resp.Messages = []api.Message{}
	}
	return resp.Messages, nil
}

// Peek returns up to max messages without leasing them (POST /v1/subscriptions/{sub}/peek; 0:
// the broker's default). Never nil on success.
func (c *Client) Peek(ctx context.Context, sub string, max int) ([]api.Message, error) {
	seg, err := segment("subscription", sub)
	if err != nil {
		return nil, err
	}
	var resp api.PullResponse
	r := request{method: http.MethodPost, path: "/v1/subscriptions/" + seg + "/peek", in: api.PeekRequest{Max: max}}
	if _, err := c.do(ctx, r, &resp); err != nil {
		return nil, err
	}
	if resp.Messages == nil {
		resp.Messages = []api.Message{}
	}
	return resp.Messages, nil
}

// Ack acknowledges messages by receipt handle (POST /v1/subscriptions/{sub}/ack). Expired or
// unknown handles are listed in the response's Invalid, not returned as an error.
func (c *Client) Ack(ctx context.Context, sub string, handles []string) (api.AckResponse, error) {
	seg, err := segment("subscription", sub)
	if err != nil {
		return api.AckResponse{}, err
	}
	if handles == nil {
		handles = []string{}
	}
	var resp api.AckResponse
	r := request{method: http.MethodPost, path: "/v1/subscriptions/" + seg + "/ack", in: api.AckRequest{ReceiptHandles: handles}}
	if _, err := c.do(ctx, r, &resp); err != nil {
		return api.AckResponse{}, err
	}
	return resp, nil
}

// Nack gives messages back for redelivery after delay (POST /v1/subscriptions/{sub}/nack).
func (c *Client) Nack(ctx context.Context, sub string, handles []string, delay time.Duration) (api.NackResponse, error) {
	seg, err := segment("subscription", sub)
	if err != nil {
		return api.NackResponse{}, err
	}
	if handles == nil {
		handles = []string{}
	}
	var resp api.NackResponse
	r := request{method: http.MethodPost, path: "/v1/subscriptions/" + seg + "/nack", in: api.AckRequest{ReceiptHandles: handles, Delay: api.Duration(delay)}}
	if _, err := c.do(ctx, r, &resp); err != nil {
		return api.NackResponse{}, err
	}
	return resp, nil
}

// ModifyVisibility sets a leased message's deadline to d from now (POST
// /v1/subscriptions/{sub}/visibility) and returns the receipt handle to use from then on (the
// old one if the broker returned none).
func (c *Client) ModifyVisibility(ctx context.Context, sub, handle string, d time.Duration) (newHandle string, err error) {
	seg, err := segment("subscription", sub)
	if err != nil {
		return "", err
	}
	var resp api.VisibilityResponse
	r := request{method: http.MethodPost, path: "/v1/subscriptions/" + seg + "/visibility", in: api.VisibilityRequest{ReceiptHandle: handle, Visibility: api.Duration(d)}}
	if _, err := c.do(ctx, r, &resp); err != nil {
		return "", err
	}
	if resp.ReceiptHandle == "" {
		return handle, nil
	}
	return resp.ReceiptHandle, nil
}
