package server

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/heraldmq/herald/broker/api"
	"github.com/heraldmq/herald/broker/engine"
)

func (s *Server) listTopics(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.TopicList{Topics: s.b.ListTopics()})
}

func (s *Server) putTopic(w http.ResponseWriter, r *http.Request) {
	var spec api.TopicSpec
	if e := decodeBody(r, &spec, true); e != nil {
		writeError(w, e)
		return
	}
	t, created, err := s.b.PutTopic(r.PathValue("topic"), spec)
	if err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, t)
}

func (s *Server) getTopic(w http.ResponseWriter, r *http.Request) {
	t, err := s.b.GetTopic(r.PathValue("topic"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) deleteTopic(w http.ResponseWriter, r *http.Request) {
	if err := s.b.DeleteTopic(r.PathValue("topic")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// publish takes {"messages":[…]} as JSON, or any other Content-Type as one raw message.
func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var msgs []api.PublishMessage
	if isJSON(r.Header.Get("Content-Type")) {
		var req api.PublishRequest
		if e := decodePublishBody(r, &req); e != nil {
			writeError(w, e)
			return
		}
		if req.Messages == nil {
			writeError(w, api.Invalid("messages", "messages is required"))
			return
		}
		msgs = req.Messages
	} else {
		m, e := rawMessage(r)
		if e != nil {
			writeError(w, e)
			return
		}
		msgs = []api.PublishMessage{m}
	}
	res, err := s.b.Publish(r.PathValue("topic"), msgs)
	if err != nil {
		writeError(w, err)
		return
	}
	writePublishResponse(w, api.PublishResponse{Results: res})
}

// isJSON reports whether the media type (parameters aside, even malformed ones such as
// "application/json; charset") is application/json: such a body is always the JSON envelope,
// never one raw message.
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// rawMessage reads a non-JSON body as one message. Attributes come from ce-* headers (kept with
// their prefix, as CloudEvents binary mode names them) and Herald-Attribute-<name> headers; the
// key, tag, ordering key and delay from Herald-Key, Herald-Tag, Herald-Ordering-Key and
// Herald-Delay; the content type is kept as the content-type attribute.
func rawMessage(r *http.Request) (api.PublishMessage, *api.Error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return api.PublishMessage{}, api.TooLarge("body", "request body exceeds %d bytes", mbe.Limit)
		}
		return api.PublishMessage{}, api.Invalid("body", "read body: %v", err)
	}
	m := api.PublishMessage{Data: body, Attributes: map[string]string{}}
	if m.Data == nil {
		m.Data = []byte{}
	}
	for name, vals := range r.Header {
		lower := strings.ToLower(name)
		switch {
		case strings.HasPrefix(lower, "ce-"):
			m.Attributes[lower] = strings.Join(vals, ",")
		case strings.HasPrefix(lower, "herald-attribute-"):
			m.Attributes[strings.TrimPrefix(lower, "herald-attribute-")] = strings.Join(vals, ",")
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		m.Attributes["content-type"] = ct
	}
	if len(m.Attributes) == 0 {
		m.Attributes = nil
	}
	m.Key = r.Header.Get("Herald-Key")
	m.Tag = r.Header.Get("Herald-Tag")
	m.OrderingKey = r.Header.Get("Herald-Ordering-Key")
	if d := r.Header.Get("Herald-Delay"); d != "" {
		v, err := api.ParseDuration(d)
		if err != nil {
			return m, api.Invalid("Herald-Delay", "%v", err)
		}
		dd := api.Duration(v)
		m.Delay = &dd
	}
	return m, nil
}

func (s *Server) listSubscriptions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.SubscriptionList{Subscriptions: s.b.ListSubscriptions()})
}

func (s *Server) putSubscription(w http.ResponseWriter, r *http.Request) {
	var spec api.SubscriptionSpec
	if e := decodeBody(r, &spec, false); e != nil {
		writeError(w, e)
		return
	}
	sub, created, err := s.b.PutSubscription(r.PathValue("sub"), spec)
	if err != nil {
		writeError(w, err)
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, sub)
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request) {
	sub, err := s.b.GetSubscription(r.PathValue("sub"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sub)
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request) {
	if err := s.b.DeleteSubscription(r.PathValue("sub")); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) pull(w http.ResponseWriter, r *http.Request) {
	var req api.PullRequest
	if e := decodeBody(r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	msgs, err := s.b.Pull(r.Context(), r.PathValue("sub"), engine.PullOptions{Max: req.Max, Wait: req.Wait.D(), Visibility: req.Visibility.D()})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PullResponse{Messages: msgs})
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	var req api.AckRequest
	if e := decodeBody(r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if req.Delay != 0 {
		writeError(w, api.Invalid("delay", "delay applies to nack, not ack"))
		return
	}
	res, err := s.b.Ack(r.PathValue("sub"), req.ReceiptHandles)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) nack(w http.ResponseWriter, r *http.Request) {
	var req api.AckRequest
	if e := decodeBody(r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	res, err := s.b.Nack(r.PathValue("sub"), req.ReceiptHandles, req.Delay.D())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) visibility(w http.ResponseWriter, r *http.Request) {
	var req api.VisibilityRequest
	if e := decodeBody(r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	h, err := s.b.ModifyVisibility(r.PathValue("sub"), req.ReceiptHandle, time.Duration(req.Visibility))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.VisibilityResponse{ReceiptHandle: h})
}

func (s *Server) peek(w http.ResponseWriter, r *http.Request) {
	var req api.PeekRequest
	if e := decodeBody(r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	msgs, err := s.b.Peek(r.PathValue("sub"), req.Max)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.PullResponse{Messages: msgs})
}
