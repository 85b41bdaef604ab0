// Package httpx is the HTTP plumbing every postern API shares: the one JSON
// writer, the one error writer (which shows only [usererr.Error] messages),
// request ids, and the one parser of the client's address.
//
// It imports no postern package but internal/usererr.
package httpx
