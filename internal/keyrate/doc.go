// Package keyrate is a table of token-bucket rate limits, one per key (an
// identity, a source address, an identity and a target), with bounded
// memory. Certificate issuance and approval requests are limited with it.
//
// It imports nothing of postern.
package keyrate
