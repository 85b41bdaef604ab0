package certs

import (
	"errors"
	"net/http"
)

// Error is a failure with a message that is safe to show the caller and a
// stable machine code (DESIGN §4: {"error": msg, "code": code}). Err holds the
// internal cause for logs; it is never shown.
type Error struct {
	// Status is the HTTP status to answer with; 400 if zero.
	Status int
	// Code is stable and machine-readable, e.g. "token_expired".
	Code string
	// Msg is short, human, and safe to show.
	Msg string
	// Err is the internal cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Msg + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus returns the status to answer with.
func (e *Error) HTTPStatus() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

// AsError returns err as an *Error, or nil if it is not one.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
