package pgproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/posternhq/postern/guardrails/mask"
)

func encodeAll(msgs ...interface{ Encode([]byte) ([]byte, error) }) []byte {
	var b []byte
	for _, m := range msgs {
		b, _ = m.Encode(b)
	}
	return b
}

// FuzzPGMessages feeds arbitrary bytes as the client's and the server's
// message streams (after startup) and as startup messages: the proxy must
// never panic, and must end with an error or EOF.
func FuzzPGMessages(f *testing.F) {
	f.Add(encodeAll(&pgproto3.Query{String: "select 1; drop table x"}, &pgproto3.Terminate{}),
		encodeAll(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("card_number")}}},
			&pgproto3.DataRow{Values: [][]byte{[]byte("4111 1111 1111 1111")}},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	f.Add(encodeAll(&pgproto3.Parse{Name: "s", Query: "delete from t"}, &pgproto3.Bind{PreparedStatement: "s"},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		encodeAll(&pgproto3.ParseComplete{}, &pgproto3.ErrorResponse{Code: "42P01", Message: "x"}, &pgproto3.ReadyForQuery{TxStatus: 'E'}))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47}, []byte{'R', 0, 0, 0, 8, 0, 0, 0, 0})
	deny, _ := ParseRule("sql:drop", ActionDeny)
	stream, _ := mask.New([]mask.Rule{{Name: "card", Columns: []string{"card*"}}, {Detector: mask.DetectorCard}})
	p, _ := New(Options{})
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte) {
		s := Session{Rules: []Rule{deny, {Pattern: regexp.MustCompile("(?i)truncate"), Action: ActionApprove}}, Stream: stream, Recording: stream}
		mk := func(client, server []byte) *conn {
			cr, sr := bytes.NewReader(client), bytes.NewReader(server)
			return &conn{
				p: p, s: s, ctx: context.Background(), log: p.log,
				client: rw{cr, io.Discard}, upstream: rw{sr, io.Discard},
				be: pgproto3.NewBackend(bufio.NewReader(cr), io.Discard), fe: pgproto3.NewFrontend(bufio.NewReader(sr), io.Discard),
				stmts: map[string]prepared{}, portals: map[string]prepared{}, txStatus: 'I',
			}
		}
		bounded := func(c *conn) *conn {
			c.be.SetMaxBodyLen(1 << 16)
			c.fe.SetMaxBodyLen(1 << 16)
			return c
		}
		if err := bounded(mk(fromClient, nil)).fromClient(); err == nil {
			t.Fatal("fromClient ended without an error")
		}
		if err := bounded(mk(nil, fromServer)).fromServer(); err == nil {
			t.Fatal("fromServer ended without an error")
		}
		c := bounded(mk(fromClient, fromServer))
		_ = c.startup()
		for _, st := range splitStatements(string(fromClient)) {
			_ = classes(normalize(st))
		}
	})
}

type rw struct {
	io.Reader
	io.Writer
}

// TestMalformedFunctionCall: a FunctionCall whose argument list is cut
// short made pgproto3's decoder panic (found by FuzzPGMessages, input kept
// in testdata/fuzz). The client's connection ends with errMalformed; the
// process does not.
func TestMalformedFunctionCall(t *testing.T) {
	cr := bytes.NewReader([]byte("F\x00\x00\x00\r000000\x00\x000"))
	p, _ := New(Options{})
	c := &conn{
		p: p, ctx: context.Background(), log: p.log,
		client: rw{cr, io.Discard}, upstream: rw{bytes.NewReader(nil), io.Discard},
		be: pgproto3.NewBackend(bufio.NewReader(cr), io.Discard), fe: pgproto3.NewFrontend(bufio.NewReader(bytes.NewReader(nil)), io.Discard),
		stmts: map[string]prepared{}, portals: map[string]prepared{}, txStatus: 'I',
	}
	if err := c.fromClient(); !errors.Is(err, errMalformed) {
		t.Fatalf("fromClient: err = %v; want errMalformed", err)
	}
}
