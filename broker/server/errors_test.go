package server_test

import (
	"strings"
	"testing"

	"github.com/heraldmq/herald/broker/api"
)

// badInput is one request the API must refuse with its JSON error: status, code and field.
type badInput struct {
	name        string
	method      string
	path        string
	contentType string // "" for JSON bodies: application/json; "-" sends none
	body        string
	header      []string
	status      int
	code        string
	field       string
}

const (
	invalid   = api.CodeInvalidArgument
	notFound  = api.CodeNotFound
	precond   = api.CodeFailedPrecondition
	tooLarge  = api.CodeTooLarge
	topicPath = "/v1/topics/t"
	pubPath   = "/v1/topics/t/messages"
	subPath   = "/v1/subscriptions/s"
)

func badInputs() []badInput {
	long := strings.Repeat("n", 250)
	return []badInput{
		// Topics.
		{name: "topic/truncated JSON", method: "PUT", path: topicPath, body: `{"partitions":`, status: 400, code: invalid, field: "body"},
		{name: "topic/syntax error", method: "PUT", path: topicPath, body: `{"partitions":3,}`, status: 400, code: invalid, field: "body"},
		{name: "topic/not an object", method: "PUT", path: topicPath, body: `[1]`, status: 400, code: invalid, field: "body"},
		{name: "topic/trailing data", method: "PUT", path: topicPath, body: `{} {}`, status: 400, code: invalid, field: "body"},
		{name: "topic/unknown field", method: "PUT", path: topicPath, body: `{"partitions":3,"replicas":2}`, status: 400, code: invalid, field: "replicas"},
		{name: "topic/unknown nested field", method: "PUT", path: topicPath, body: `{"retention":{"maxAge":"1h","maxCount":1}}`, status: 400, code: invalid, field: "retention.maxCount"},
		{name: "topic/partitions a string", method: "PUT", path: topicPath, body: `{"partitions":"3"}`, status: 400, code: invalid, field: "partitions"},
		{name: "topic/partitions a fraction", method: "PUT", path: topicPath, body: `{"partitions":1.5}`, status: 400, code: invalid, field: "partitions"},
		{name: "topic/partitions negative", method: "PUT", path: topicPath, body: `{"partitions":-1}`, status: 400, code: invalid, field: "partitions"},
		{name: "topic/partitions too many", method: "PUT", path: topicPath, body: `{"partitions":5000}`, status: 400, code: invalid, field: "partitions"},
		{name: "topic/maxBytes a string", method: "PUT", path: topicPath, body: `{"retention":{"maxBytes":"1GB"}}`, status: 400, code: invalid, field: "retention.maxBytes"},
		{name: "topic/maxBytes negative", method: "PUT", path: topicPath, body: `{"retention":{"maxBytes":-1}}`, status: 400, code: invalid, field: "retention.maxBytes"},
		{name: "topic/maxMessageBytes negative", method: "PUT", path: topicPath, body: `{"maxMessageBytes":-1}`, status: 400, code: invalid, field: "maxMessageBytes"},
		{name: "topic/maxMessageBytes too big", method: "PUT", path: topicPath, body: `{"maxMessageBytes":1000000000}`, status: 400, code: invalid, field: "maxMessageBytes"},
		{name: "topic/bad duration", method: "PUT", path: topicPath, body: `{"retention":{"maxAge":"forever"}}`, status: 400, code: invalid, field: "retention.maxAge"},
		{name: "topic/negative duration", method: "PUT", path: topicPath, body: `{"messageTTL":"-1s"}`, status: 400, code: invalid, field: "messageTTL"},
		{name: "topic/duration without unit", method: "PUT", path: topicPath, body: `{"messageTTL":"30"}`, status: 400, code: invalid, field: "messageTTL"},
		{name: "topic/duration a number", method: "PUT", path: topicPath, body: `{"partitions":2,"messageTTL":30}`, status: 400, code: invalid, field: "messageTTL"},
		{name: "topic/duration an object", method: "PUT", path: topicPath, body: `{"retention":{"maxAge":{"hours":1}}}`, status: 400, code: invalid, field: "retention.maxAge"},
		{name: "topic/shrink", method: "PUT", path: "/v1/topics/existing", body: `{"partitions":1}`, status: 409, code: precond, field: "partitions"},
		{name: "topic/invalid name", method: "PUT", path: "/v1/topics/bad$name", body: `{}`, status: 400, code: invalid, field: "name"},
		{name: "topic/name with a space", method: "PUT", path: "/v1/topics/bad%20name", body: `{}`, status: 400, code: invalid, field: "name"},
		{name: "topic/name with a slash", method: "PUT", path: "/v1/topics/a%2Fb", body: `{}`, status: 400, code: invalid, field: "name"},
		{name: "topic/name too long", method: "PUT", path: "/v1/topics/" + long, body: `{}`, status: 400, code: invalid, field: "name"},
		{name: "topic/name not ASCII", method: "PUT", path: "/v1/topics/caf%C3%A9", body: `{}`, status: 400, code: invalid, field: "name"},
		{name: "topic/GET unknown", method: "GET", path: "/v1/topics/nope", status: 404, code: notFound, field: "topic"},
		{name: "topic/GET invalid name", method: "GET", path: "/v1/topics/bad$name", status: 400, code: invalid, field: "topic"},
		{name: "topic/DELETE unknown", method: "DELETE", path: "/v1/topics/nope", status: 404, code: notFound, field: "name"},
		{name: "topic/DELETE invalid name", method: "DELETE", path: "/v1/topics/bad$name", status: 400, code: invalid, field: "name"},

		// Publish.
		{name: "publish/empty body", method: "POST", path: pubPath, body: ``, status: 400, code: invalid, field: "body"},
		{name: "publish/blank body", method: "POST", path: pubPath, body: " \n", status: 400, code: invalid, field: "body"},
		{name: "publish/truncated JSON", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"}`, status: 400, code: invalid, field: "body"},
		{name: "publish/syntax error", method: "POST", path: pubPath, body: `{"messages":[{"text":'a'}]}`, status: 400, code: invalid, field: "body"},
		{name: "publish/JSON with charset, malformed", method: "POST", path: pubPath, contentType: "application/json; charset=utf-8", body: `{"messages":`, status: 400, code: invalid, field: "body"},
		{name: "publish/no messages member", method: "POST", path: pubPath, body: `{}`, status: 400, code: invalid, field: "messages"},
		{name: "publish/messages null", method: "POST", path: pubPath, body: `{"messages":null}`, status: 400, code: invalid, field: "messages"},
		{name: "publish/empty messages", method: "POST", path: pubPath, body: `{"messages":[]}`, status: 400, code: invalid, field: "messages"},
		{name: "publish/messages an object", method: "POST", path: pubPath, body: `{"messages":{"text":"a"}}`, status: 400, code: invalid, field: "messages"},
		{name: "publish/unknown top-level field", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"}],"topic":"t"}`, status: 400, code: invalid, field: "topic"},
		{name: "publish/unknown message field", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"},{"text":"b","color":"red"}]}`, status: 400, code: invalid, field: "messages[1].color"},
		{name: "publish/text a number", method: "POST", path: pubPath, body: `{"messages":[{"text":5}]}`, status: 400, code: invalid, field: "messages[0].text"},
		{name: "publish/key a number", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"},{"text":"b","key":7}]}`, status: 400, code: invalid, field: "messages[1].key"},
		{name: "publish/attribute value a number", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","attributes":{"n":1}}]}`, status: 400, code: invalid, field: "messages[0].attributes.n"},
		{name: "publish/attributes a list", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","attributes":["n"]}]}`, status: 400, code: invalid, field: "messages[0].attributes"},
		{name: "publish/data not base64", method: "POST", path: pubPath, body: `{"messages":[{"data":"aGk="},{"data":"not base64!"}]}`, status: 400, code: invalid, field: "messages[1].data"},
		{name: "publish/data a number", method: "POST", path: pubPath, body: `{"messages":[{"data":12}]}`, status: 400, code: invalid, field: "messages[0].data"},
		{name: "publish/data and text", method: "POST", path: pubPath, body: `{"messages":[{"data":"aGk=","text":"hi"}]}`, status: 400, code: invalid, field: "messages[0].data"},
		{name: "publish/neither data nor text", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"},{"key":"k"}]}`, status: 400, code: invalid, field: "messages[1].data"},
		{name: "publish/bad delay", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","delay":"5 minutes"}]}`, status: 400, code: invalid, field: "messages[0].delay"},
		{name: "publish/negative delay", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"},{"text":"a","delay":"-5s"}]}`, status: 400, code: invalid, field: "messages[1].delay"},
		{name: "publish/delay a number", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","delay":30}]}`, status: 400, code: invalid, field: "messages[0].delay"},
		{name: "publish/delay too long", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","delay":"9000h"}]}`, status: 400, code: invalid, field: "messages[0].delay"},
		{name: "publish/delay and deliverAt", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","delay":"1s","deliverAt":"2030-01-01T00:00:00Z"}]}`, status: 400, code: invalid, field: "messages[0].delay"},
		{name: "publish/bad deliverAt", method: "POST", path: pubPath, body: `{"messages":[{"text":"a"},{"text":"a","deliverAt":"tomorrow"}]}`, status: 400, code: invalid, field: "messages[1].deliverAt"},
		{name: "publish/deliverAt a number", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","deliverAt":1700000000}]}`, status: 400, code: invalid, field: "messages[0].deliverAt"},
		{name: "publish/deliverAt too far", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","deliverAt":"2999-01-01T00:00:00Z"}]}`, status: 400, code: invalid, field: "messages[0].deliverAt"},
		{name: "publish/control character in key", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","key":"a\u0001b"}]}`, status: 400, code: invalid, field: "messages[0].key"},
		{name: "publish/tag too long", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","tag":"` + strings.Repeat("t", 257) + `"}]}`, status: 400, code: invalid, field: "messages[0].tag"},
		{name: "publish/empty attribute name", method: "POST", path: pubPath, body: `{"messages":[{"text":"a","attributes":{"":"v"}}]}`, status: 400, code: invalid, field: "messages[0].attributes"},
		{name: "publish/oversized text", method: "POST", path: pubPath, body: `{"messages":[{"text":"0123456789abcdef"},{"text":"0123456789abcdefX"}]}`, status: 413, code: tooLarge, field: "messages[1].text"},
		{name: "publish/oversized data", method: "POST", path: pubPath, body: `{"messages":[{"data":"` + b64("0123456789abcdefX") + `"}]}`, status: 413, code: tooLarge, field: "messages[0].data"},
		{name: "publish/oversized raw", method: "POST", path: pubPath, contentType: "application/octet-stream", body: "0123456789abcdefX", status: 413, code: tooLarge, field: "messages[0].data"},
		{name: "publish/raw bad Herald-Delay", method: "POST", path: pubPath, contentType: "text/plain", body: "x", header: []string{"Herald-Delay", "soon"}, status: 400, code: invalid, field: "Herald-Delay"},
		{name: "publish/raw empty attribute name", method: "POST", path: pubPath, contentType: "text/plain", body: "x", header: []string{"Herald-Attribute-", "v"}, status: 400, code: invalid, field: "messages[0].attributes"},
		{name: "publish/unknown topic", method: "POST", path: "/v1/topics/nope/messages", body: `{"messages":[{"text":"a"}]}`, status: 404, code: notFound, field: "topic"},
		{name: "publish/raw to unknown topic", method: "POST", path: "/v1/topics/nope/messages", contentType: "-", body: "a", status: 404, code: notFound, field: "topic"},
		{name: "publish/invalid topic name", method: "POST", path: "/v1/topics/bad$name/messages", body: `{"messages":[{"text":"a"}]}`, status: 400, code: invalid, field: "topic"},

		// Subscriptions.
		{name: "sub/empty body", method: "PUT", path: "/v1/subscriptions/new", body: ``, status: 400, code: invalid, field: "body"},
		{name: "sub/no topic", method: "PUT", path: "/v1/subscriptions/new", body: `{}`, status: 400, code: invalid, field: "topic"},
		{name: "sub/unknown topic", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"nope"}`, status: 404, code: notFound, field: "topic"},
		{name: "sub/invalid topic name", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"a b"}`, status: 400, code: invalid, field: "topic"},
		{name: "sub/invalid name", method: "PUT", path: "/v1/subscriptions/bad$name", body: `{"topic":"t"}`, status: 400, code: invalid, field: "name"},
		{name: "sub/malformed JSON", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t"`, status: 400, code: invalid, field: "body"},
		{name: "sub/unknown field", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","ackDeadlineSeconds":10}`, status: 400, code: invalid, field: "ackDeadlineSeconds"},
		{name: "sub/unknown retry field", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"attempts":3}}`, status: 400, code: invalid, field: "retry.attempts"},
		{name: "sub/ordered a string", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","ordered":"yes"}`, status: 400, code: invalid, field: "ordered"},
		{name: "sub/maxAttempts a string", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"maxAttempts":"3"}}`, status: 400, code: invalid, field: "retry.maxAttempts"},
		{name: "sub/maxAttempts negative", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"maxAttempts":-3}}`, status: 400, code: invalid, field: "retry.maxAttempts"},
		{name: "sub/bad ackDeadline", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","ackDeadline":"1 minute"}`, status: 400, code: invalid, field: "ackDeadline"},
		{name: "sub/ackDeadline too short", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","ackDeadline":"10ms"}`, status: 400, code: invalid, field: "ackDeadline"},
		{name: "sub/ackDeadline too long", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","ackDeadline":"24h"}`, status: 400, code: invalid, field: "ackDeadline"},
		{name: "sub/bad minBackoff", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"minBackoff":"x"}}`, status: 400, code: invalid, field: "retry.minBackoff"},
		{name: "sub/minBackoff above maxBackoff", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"minBackoff":"1m","maxBackoff":"1s"}}`, status: 400, code: invalid, field: "retry.minBackoff"},
		{name: "sub/bad retry policy", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","retry":{"policy":"random"}}`, status: 400, code: invalid, field: "retry.policy"},
		{name: "sub/invalid filter", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","filter":"tag =="}`, status: 400, code: invalid, field: "filter"},
		{name: "sub/filter not boolean", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","filter":"attributes"}`, status: 400, code: invalid, field: "filter"},
		{name: "sub/filter unknown variable", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","filter":"priority == 'high'"}`, status: 400, code: invalid, field: "filter"},
		{name: "sub/filter a number", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","filter":1}`, status: 400, code: invalid, field: "filter"},
		{name: "sub/bad startAt", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","startAt":"yesterday"}`, status: 400, code: invalid, field: "startAt"},
		{name: "sub/invalid deadLetterTopic", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","deadLetterTopic":"bad name"}`, status: 400, code: invalid, field: "deadLetterTopic"},
		{name: "sub/deadLetterTopic is the topic", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","deadLetterTopic":"t"}`, status: 400, code: invalid, field: "deadLetterTopic"},
		{name: "sub/push endpoint not http", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","push":{"endpoint":"ftp://example.com/x"}}`, status: 400, code: invalid, field: "push.endpoint"},
		{name: "sub/push endpoint link-local", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","push":{"endpoint":"http://169.254.169.254/latest/meta-data"}}`, status: 400, code: invalid, field: "push.endpoint"},
		{name: "sub/push endpoint cloud metadata v6", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","push":{"endpoint":"http://[fd00:ec2::254]/"}}`, status: 400, code: invalid, field: "push.endpoint"},
		{name: "sub/push format", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","push":{"endpoint":"http://127.0.0.1:9/","format":"xml"}}`, status: 400, code: invalid, field: "push.format"},
		{name: "sub/push timeout", method: "PUT", path: "/v1/subscriptions/new", body: `{"topic":"t","push":{"endpoint":"http://127.0.0.1:9/","timeout":"1 second"}}`, status: 400, code: invalid, field: "push.timeout"},
		{name: "sub/change topic", method: "PUT", path: subPath, body: `{"topic":"existing"}`, status: 409, code: precond, field: "topic"},
		{name: "sub/GET unknown", method: "GET", path: "/v1/subscriptions/nope", status: 404, code: notFound, field: "subscription"},
		{name: "sub/DELETE unknown", method: "DELETE", path: "/v1/subscriptions/nope", status: 404, code: notFound, field: "name"},

		// Pull.
		{name: "pull/unknown subscription", method: "POST", path: "/v1/subscriptions/nope/pull", body: `{}`, status: 404, code: notFound, field: "subscription"},
		{name: "pull/invalid subscription name", method: "POST", path: "/v1/subscriptions/bad$name/pull", body: `{}`, status: 400, code: invalid, field: "subscription"},
		{name: "pull/malformed JSON", method: "POST", path: subPath + "/pull", body: `{"max":`, status: 400, code: invalid, field: "body"},
		{name: "pull/unknown field", method: "POST", path: subPath + "/pull", body: `{"maxMessages":10}`, status: 400, code: invalid, field: "maxMessages"},
		{name: "pull/max a string", method: "POST", path: subPath + "/pull", body: `{"max":"10"}`, status: 400, code: invalid, field: "max"},
		{name: "pull/max negative", method: "POST", path: subPath + "/pull", body: `{"max":-1}`, status: 400, code: invalid, field: "max"},
		{name: "pull/max too big", method: "POST", path: subPath + "/pull", body: `{"max":1001}`, status: 400, code: invalid, field: "max"},
		{name: "pull/wait too long", method: "POST", path: subPath + "/pull", body: `{"wait":"31s"}`, status: 400, code: invalid, field: "wait"},
		{name: "pull/bad wait", method: "POST", path: subPath + "/pull", body: `{"wait":"forever"}`, status: 400, code: invalid, field: "wait"},
		{name: "pull/negative wait", method: "POST", path: subPath + "/pull", body: `{"wait":"-1s"}`, status: 400, code: invalid, field: "wait"},
		{name: "pull/wait a number", method: "POST", path: subPath + "/pull", body: `{"max":10,"wait":20}`, status: 400, code: invalid, field: "wait"},
		{name: "pull/visibility too long", method: "POST", path: subPath + "/pull", body: `{"visibility":"13h"}`, status: 400, code: invalid, field: "visibility"},
		{name: "pull/bad visibility", method: "POST", path: subPath + "/pull", body: `{"visibility":"30"}`, status: 400, code: invalid, field: "visibility"},

		// Ack, nack, visibility, peek.
		{name: "ack/empty body", method: "POST", path: subPath + "/ack", body: ``, status: 400, code: invalid, field: "body"},
		{name: "ack/no handles", method: "POST", path: subPath + "/ack", body: `{}`, status: 400, code: invalid, field: "receiptHandles"},
		{name: "ack/empty handles", method: "POST", path: subPath + "/ack", body: `{"receiptHandles":[]}`, status: 400, code: invalid, field: "receiptHandles"},
		{name: "ack/handles a string", method: "POST", path: subPath + "/ack", body: `{"receiptHandles":"abc"}`, status: 400, code: invalid, field: "receiptHandles"},
		{name: "ack/handle a number", method: "POST", path: subPath + "/ack", body: `{"receiptHandles":["abc",5]}`, status: 400, code: invalid, field: "receiptHandles[1]"},
		{name: "ack/with a delay", method: "POST", path: subPath + "/ack", body: `{"receiptHandles":["abc"],"delay":"1s"}`, status: 400, code: invalid, field: "delay"},
		{name: "ack/unknown field", method: "POST", path: subPath + "/ack", body: `{"handles":["abc"]}`, status: 400, code: invalid, field: "handles"},
		{name: "ack/unknown subscription", method: "POST", path: "/v1/subscriptions/nope/ack", body: `{"receiptHandles":["abc"]}`, status: 404, code: notFound, field: "subscription"},
		{name: "nack/empty body", method: "POST", path: subPath + "/nack", body: ``, status: 400, code: invalid, field: "body"},
		{name: "nack/no handles", method: "POST", path: subPath + "/nack", body: `{"delay":"1s"}`, status: 400, code: invalid, field: "receiptHandles"},
		{name: "nack/bad delay", method: "POST", path: subPath + "/nack", body: `{"receiptHandles":["abc"],"delay":"later"}`, status: 400, code: invalid, field: "delay"},
		{name: "nack/negative delay", method: "POST", path: subPath + "/nack", body: `{"receiptHandles":["abc"],"delay":"-1s"}`, status: 400, code: invalid, field: "delay"},
		{name: "nack/delay too long", method: "POST", path: subPath + "/nack", body: `{"receiptHandles":["abc"],"delay":"13h"}`, status: 400, code: invalid, field: "delay"},
		{name: "nack/unknown subscription", method: "POST", path: "/v1/subscriptions/nope/nack", body: `{"receiptHandles":["abc"]}`, status: 404, code: notFound, field: "subscription"},
		{name: "visibility/empty body", method: "POST", path: subPath + "/visibility", body: ``, status: 400, code: invalid, field: "body"},
		{name: "visibility/no handle", method: "POST", path: subPath + "/visibility", body: `{"visibility":"1m"}`, status: 400, code: invalid, field: "receiptHandle"},
		{name: "visibility/garbage handle", method: "POST", path: subPath + "/visibility", body: `{"receiptHandle":"garbage","visibility":"1m"}`, status: 409, code: precond, field: "receiptHandle"},
		{name: "visibility/well-formed unknown handle", method: "POST", path: subPath + "/visibility", body: `{"receiptHandle":"AQIDBA","visibility":"1m"}`, status: 409, code: precond, field: "receiptHandle"},
		{name: "visibility/handles a list", method: "POST", path: subPath + "/visibility", body: `{"receiptHandle":["garbage"],"visibility":"1m"}`, status: 400, code: invalid, field: "receiptHandle"},
		{name: "visibility/bad duration", method: "POST", path: subPath + "/visibility", body: `{"receiptHandle":"garbage","visibility":"1 minute"}`, status: 400, code: invalid, field: "visibility"},
		{name: "visibility/too long", method: "POST", path: subPath + "/visibility", body: `{"receiptHandle":"garbage","visibility":"13h"}`, status: 400, code: invalid, field: "visibility"},
		{name: "visibility/unknown field", method: "POST", path: subPath + "/visibility", body: `{"receiptHandles":["garbage"],"visibility":"1m"}`, status: 400, code: invalid, field: "receiptHandles"},
		{name: "visibility/unknown subscription", method: "POST", path: "/v1/subscriptions/nope/visibility", body: `{"receiptHandle":"garbage","visibility":"1m"}`, status: 404, code: notFound, field: "subscription"},
		{name: "peek/max negative", method: "POST", path: subPath + "/peek", body: `{"max":-1}`, status: 400, code: invalid, field: "max"},
		{name: "peek/max a string", method: "POST", path: subPath + "/peek", body: `{"max":"1"}`, status: 400, code: invalid, field: "max"},
		{name: "peek/unknown field", method: "POST", path: subPath + "/peek", body: `{"max":1,"wait":"1s"}`, status: 400, code: invalid, field: "wait"},
		{name: "peek/unknown subscription", method: "POST", path: "/v1/subscriptions/nope/peek", body: `{}`, status: 404, code: notFound, field: "subscription"},

		// Methods and routes.
		{name: "405/POST topics", method: "POST", path: "/v1/topics", body: `{}`, status: 405, code: invalid, field: "method"},
		{name: "405/PATCH topic", method: "PATCH", path: topicPath, body: `{}`, status: 405, code: invalid, field: "method"},
		{name: "405/POST topic", method: "POST", path: topicPath, body: `{}`, status: 405, code: invalid, field: "method"},
		{name: "405/GET messages", method: "GET", path: pubPath, status: 405, code: invalid, field: "method"},
		{name: "405/PUT subscriptions", method: "PUT", path: "/v1/subscriptions", body: `{}`, status: 405, code: invalid, field: "method"},
		{name: "405/GET pull", method: "GET", path: subPath + "/pull", status: 405, code: invalid, field: "method"},
		{name: "405/PUT ack", method: "PUT", path: subPath + "/ack", body: `{}`, status: 405, code: invalid, field: "method"},
		{name: "405/DELETE nack", method: "DELETE", path: subPath + "/nack", status: 405, code: invalid, field: "method"},
		{name: "405/GET visibility", method: "GET", path: subPath + "/visibility", status: 405, code: invalid, field: "method"},
		{name: "405/GET peek", method: "GET", path: subPath + "/peek", status: 405, code: invalid, field: "method"},
		{name: "405/POST healthz", method: "POST", path: "/healthz", status: 405, code: invalid, field: "method"},
		{name: "405/DELETE metrics", method: "DELETE", path: "/metrics", status: 405, code: invalid, field: "method"},
		{name: "404/unknown route", method: "GET", path: "/v2/topics", status: 404, code: notFound, field: "path"},
		{name: "404/unknown subresource", method: "POST", path: topicPath + "/publish", body: `{}`, status: 404, code: notFound, field: "path"},
		{name: "404/root", method: "GET", path: "/", status: 404, code: notFound, field: "path"},
		{name: "404/dot-dot topic", method: "PUT", path: "/v1/topics/..", body: `{}`, status: 404, code: notFound, field: "path"},
		{name: "404/dot topic", method: "POST", path: "/v1/topics/./messages", body: `{"messages":[{"text":"a"}]}`, status: 404, code: notFound, field: "path"},
		{name: "404/doubled slash", method: "POST", path: "/v1//topics/t/messages", body: `{"messages":[{"text":"a"}]}`, status: 404, code: notFound, field: "path"},
		{name: "404/dot-dot up", method: "POST", path: "/v1/subscriptions/../topics/t/messages", body: `{"messages":[{"text":"a"}]}`, status: 404, code: notFound, field: "path"},
		{name: "404/trailing slash", method: "GET", path: "/v1/topics/", status: 404, code: notFound, field: "path"},
	}
}

// TestBadInput sends each bad request to a broker with topic t (2 partitions, maxMessageBytes
// 16), topic existing (3 partitions) and subscription s on t, and checks the JSON error.
func TestBadInput(t *testing.T) {
	for _, m := range storageModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, m.cfg(t))
			e.putTopic("t", `{"partitions":2,"maxMessageBytes":16}`)
			e.putTopic("existing", `{"partitions":3}`)
			e.putSub("s", msg{"topic": "t"})
			for _, tc := range badInputs() {
				t.Run(tc.name, func(t *testing.T) {
					e.t = t
					var body []byte
					if tc.body != "" || tc.method == "POST" || tc.method == "PUT" {
						body = []byte(tc.body)
					}
					header := append([]string(nil), tc.header...)
					switch tc.contentType {
					case "":
						header = append(header, "Content-Type", "application/json")
					case "-":
					default:
						header = append(header, "Content-Type", tc.contentType)
					}
					r := e.do(tc.method, tc.path, body, header...)
					r.wantError(t, tc.status, tc.code, tc.field)
					if tc.status == 405 && r.header.Get("Allow") == "" {
						t.Errorf("405 without an Allow header")
					}
					if tc.name == "405/PATCH topic" && r.header.Get("Allow") != "DELETE, GET, HEAD, PUT" {
						t.Errorf("Allow: %q", r.header.Get("Allow"))
					}
				})
			}
			// Nothing above changed the broker.
			e.t = t
			if st := decode[api.Topic](t, e.do("GET", "/v1/topics/t", nil)).Stats; st.Messages != 0 || st.Delayed != 0 {
				t.Errorf("a refused publish left messages: %+v", st)
			}
			if n := len(decode[api.SubscriptionList](t, e.do("GET", "/v1/subscriptions", nil)).Subscriptions); n != 1 {
				t.Errorf("%d subscriptions after refused PUTs, want 1", n)
			}
			if n := len(decode[api.TopicList](t, e.do("GET", "/v1/topics", nil)).Topics); n != 2 {
				t.Errorf("%d topics after refused PUTs, want 2", n)
			}
		})
	}
}
