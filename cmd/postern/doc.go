// Command postern is the SSH bastion and session recorder: one binary that
// serves (postern serve) and is its own client (login, play, sessions, …).
//
// This package holds the cobra commands and their flags only: serve hands
// the configuration to server.Service, the client commands call certs/login,
// players and the state store. main builds the logger and calls run.
// Nothing imports it.
package main
