package usererr

import (
	"errors"
	"net/http"
	"time"
)

// Error is a failure whose Msg is safe to show the user. Err holds the
// internal cause, for logs only; it is never shown.
type Error struct {
	// Msg is short, human and safe to show.
	Msg string
	// Code is stable and machine-readable, e.g. "token_expired".
	Code string
	// Status is the HTTP status to answer with; 400 if zero.
	Status int
	// Exit is the exit status an SSH session reports; the session's own
	// default if zero.
	Exit int
	// Global reports that the message is about the request as a whole, not
	// the target an SSH session reaches: it is shown as "postern: <msg>"
	// rather than "postern: <target>: <msg>".
	Global bool
	// RetryAfter, if positive, is when the request may be retried (an HTTP
	// Retry-After header).
	RetryAfter time.Duration
	// Err is the internal cause, for logs only.
	Err error
}

// New returns an Error with a stable code and a safe message.
func New(code, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Error describes the failure for logs, cause included.
func (e *Error) Error() string {
	s := e.Msg
	if e.Code != "" {
		s = e.Code + ": " + s
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus returns the status to answer with.
func (e *Error) HTTPStatus() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

// As returns the user-visible error in err's chain, or nil if there is none.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
