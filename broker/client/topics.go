package client

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/heraldmq/herald/broker/api"
)

// PutTopic creates the topic or updates it to spec (PUT /v1/topics/{topic}; idempotent).
// created is true when the broker answered 201 Created.
func (c *Client) PutTopic(ctx context.Context, name string, spec api.TopicSpec) (topic api.Topic, created bool, err error) {
	seg, err := segment("topic", name)
	if err != nil {
		return api.Topic{}, false, err
	}
	status, err := c.do(ctx, request{method: http.MethodPut, path: "/v1/topics/" + seg, in: spec}, &topic)
	if err != nil {
		return api.Topic{}, false, err
	}
	return topic, status == http.StatusCreated, nil
}

// GetTopic returns the topic with its stats (GET /v1/topics/{topic}).
func (c *Client) GetTopic(ctx context.Context, name string) (api.Topic, error) {
	seg, err := segment("topic", name)
	if err != nil {
		return api.Topic{}, err
	}
	var t api.Topic
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/topics/" + seg}, &t); err != nil {
		return api.Topic{}, err
	}
	return t, nil
}

// ListTopics returns every topic (GET /v1/topics); never nil on success.
func (c *Client) ListTopics(ctx context.Context) ([]api.Topic, error) {
	var l api.TopicList
	if _, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/topics"}, &l); err != nil {
		return nil, err
	}
	if l.Topics == nil {
		l.Topics = []api.Topic{}
	}
	return l.Topics, nil
}

// DeleteTopic deletes the topic (DELETE /v1/topics/{topic}); NotFound if it is absent.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	seg, err := segment("topic", name)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodDelete, path: "/v1/topics/" + seg}, nil)
	return err
}

// Publish sends messages to the topic in one request (POST /v1/topics/{topic}/messages) and
// returns one result per message, in order. It returns once the broker has made them durable.
func (c *Client) Publish(ctx context.Context, topic string, msgs []api.PublishMessage) ([]api.PublishResult, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return nil, err
	}
	if msgs == nil {
		msgs = []api.PublishMessage{} // "messages":[] (the broker's 400), not null
	}
	var resp api.PublishResponse
	req := request{method: http.MethodPost, path: "/v1/topics/" + seg + "/messages", in: api.PublishRequest{Messages: msgs}}
	if _, err := c.do(ctx, req, &resp); err != nil {
		return nil, err
	}
	if len(resp.Results) != len(msgs) {
		return resp.Results, fmt.Errorf("client: publish to %q: broker returned %d results for %d messages", topic, len(resp.Results), len(msgs))
	}
	return resp.Results, nil
}

// AttributeHeader is the request header that carries attribute name of a raw message.
func AttributeHeader(name string) string { return "Herald-Attribute-" + name }

// AttributeHeaders turns message attributes into the headers of a raw publish.
func AttributeHeaders(attrs map[string]string) map[string]string {
	h := make(map[string]string, len(attrs))
	for k, v := range attrs {
		h[AttributeHeader(k)] = v
	}
	return h
}

// PublishRaw publishes body, as is, as one message (POST /v1/topics/{topic}/messages with a
// non-JSON Content-Type; empty means application/octet-stream). headers are sent verbatim: the
// broker takes the message's attributes from Herald-Attribute-<name> headers (see
// AttributeHeaders) and from CloudEvents ce-* headers. A JSON content type is refused here,
// since the broker would read such a body as a publish request: use Publish for JSON.
func (c *Client) PublishRaw(ctx context.Context, topic, contentType string, body []byte, headers map[string]string) (api.PublishResult, error) {
	seg, err := segment("topic", topic)
	if err != nil {
		return api.PublishResult{}, err
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == "application/json" {
		return api.PublishResult{}, api.Invalid("contentType", "a raw message must not be application/json: use Publish")
	}
	h := make(map[string]string, len(headers))
	for k, v := range headers {
		if strings.EqualFold(k, "Content-Type") {
			continue // contentType says it
		}
		h[k] = v
	}
	if body == nil {
		body = []byte{}
	}
	// The broker answers a raw publish like any publish ({"results":[…]}); a bare result is
	// accepted too.
	var resp struct {
		Results []api.PublishResult `json:"results"`
		api.PublishResult
	}
	req := request{method: http.MethodPost, path: "/v1/topics/" + seg + "/messages", raw: body, contentType: contentType, header: h}
	if _, err := c.do(ctx, req, &resp); err != nil {
		return api.PublishResult{}, err
	}
	switch {
	case len(resp.Results) == 1:
		return resp.Results[0], nil
	case len(resp.Results) == 0 && resp.ID != "":
		return resp.PublishResult, nil
	}
	return api.PublishResult{}, fmt.Errorf("client: raw publish to %q: broker returned %d results for 1 message", topic, len(resp.Results))
}

// Healthz checks that the broker process is alive (GET /healthz).
func (c *Client) Healthz(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz"}, nil)
	return err
}

// Readyz checks that the broker is ready to serve: its log is recovered (GET /readyz).
func (c *Client) Readyz(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/readyz"}, nil)
	return err
}
