package netx

import (
	"io"
	"net"
	"testing"
)

// TestHandshakeConn: the wrapper passes bytes through unchanged on a real
// loopback TCP connection, where asking for a quick ACK succeeds, and on a
// connection that is not a socket, where it is skipped.
func TestHandshakeConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if err := QuickAck(server); err != nil {
		t.Fatalf("QuickAck on a TCP connection: %v", err)
	}

	hc := NewHandshakeConn(server)
	for i, msg := range []string{"SSH-2.0-client\r\n", "after the handshake"} {
		if i == 1 {
			hc.Done()
		}
		if _, err := client.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(hc, buf); err != nil {
			t.Fatal(err)
		}
		if string(buf) != msg {
			t.Errorf("read %q; want %q", buf, msg)
		}
	}

	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := QuickAck(a); err != nil {
		t.Errorf("QuickAck on a pipe: %v; want nil (skipped)", err)
	}
}
