package api

import "fmt"

// Error codes of the error body. Each maps to one HTTP status (see Status).
const (
	CodeInvalidArgument    = "InvalidArgument"
	CodeNotFound           = "NotFound"
	CodeAlreadyExists      = "AlreadyExists"
	CodeFailedPrecondition = "FailedPrecondition"
	CodeTooLarge           = "TooLarge"
	CodeUnavailable        = "Unavailable"
	CodeInternal           = "Internal"
)

// Error is the body of every non-2xx response: {"error":{"code":…,"message":…,"field":…}}.
// It also serves as the Go error both the server's engine and the client return.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the request field at fault, as a JSON path such as "messages[2].data".
	Field string `json:"field,omitempty"`
	// HTTPStatus is the response status; the client fills it in, it is not part of the body.
	HTTPStatus int `json:"-"`
}

// ErrorBody wraps Error as it is sent on the wire.
type ErrorBody struct {
	Error *Error `json:"error"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (field %s)", e.Code, e.Message, e.Field)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Status is the HTTP status for the error's code.
func (e *Error) Status() int {
	switch e.Code {
	case CodeInvalidArgument:
		return 400
	case CodeNotFound:
		return 404
	case CodeAlreadyExists, CodeFailedPrecondition:
		return 409
	case CodeTooLarge:
		return 413
	case CodeUnavailable:
		return 503
	}
	return 500
}

// Invalid returns an InvalidArgument error naming field.
func Invalid(field, format string, a ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Field: field, Message: fmt.Sprintf(format, a...)}
}

// NotFound returns a NotFound error.
func NotFound(field, format string, a ...any) *Error {
	return &Error{Code: CodeNotFound, Field: field, Message: fmt.Sprintf(format, a...)}
}

// Precondition returns a FailedPrecondition error.
func Precondition(field, format string, a ...any) *Error {
	return &Error{Code: CodeFailedPrecondition, Field: field, Message: fmt.Sprintf(format, a...)}
}

// TooLarge returns a TooLarge error.
func TooLarge(field, format string, a ...any) *Error {
	return &Error{Code: CodeTooLarge, Field: field, Message: fmt.Sprintf(format, a...)}
}

// Unavailable returns an Unavailable error.
func Unavailable(format string, a ...any) *Error {
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf(format, a...)}
}
