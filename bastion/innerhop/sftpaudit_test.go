package innerhop

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// sftpPacket builds an SFTP packet: type, id, then fields (string, uint32
// or uint64 values).
func sftpPacket(typ byte, id uint32, fields ...any) []byte {
	body := []byte{typ}
	body = binary.BigEndian.AppendUint32(body, id)
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		case []byte:
			body = binary.BigEndian.AppendUint32(body, uint32(len(v)))
			body = append(body, v...)
		case uint32:
			body = binary.BigEndian.AppendUint32(body, v)
		case uint64:
			body = binary.BigEndian.AppendUint64(body, v)
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

func newTestSFTPAudit(events *eventLog) *sftpAudit {
	h := &Server{opts: Options{Audit: events.add}}
	h.now = time.Now
	c := &hopConn{h: h, ci: &bastion.ConnInfo{}, t: &policy.Target{Target: config.Target{Name: "web-1"}}, login: "root", ctx: context.Background()}
	return newSFTPAudit(c, "s1")
}

func TestSFTPAudit(t *testing.T) {
	events := &eventLog{}
	a := newTestSFTPAudit(events)
	big := make([]byte, 20000) // longer than the kept head
	client := [][]byte{
		sftpPacket(sshFxpOpen, 1, "/etc/motd", uint32(sshFxfWrite|sshFxfCreat|sshFxfTrunc), uint32(0)),
		sftpPacket(sshFxpWrite, 2, "H1", uint64(0), big),
		sftpPacket(sshFxpWrite, 3, "H1", uint64(20000), []byte("tail")),
		sftpPacket(sshFxpOpen, 4, "/data", uint32(sshFxfRead), uint32(0)),
		sftpPacket(sshFxpRead, 5, "H2", uint64(0), uint32(32768)),
		sftpPacket(sshFxpClose, 6, "H1"),
		sftpPacket(sshFxpRemove, 7, "/tmp/x"),
		sftpPacket(sshFxpRename, 8, "/a", "/b"),
		sftpPacket(sshFxpExt, 9, "posix-rename@openssh.com", "/c", "/d"),
		sftpPacket(sshFxpMkdir, 10, "/dir", uint32(0)),
		sftpPacket(sshFxpRmdir, 11, "/dir"),
	}
	server := [][]byte{
		sftpPacket(sshFxpHandle, 1, "H1"),
		sftpPacket(sshFxpHandle, 4, "H2"),
		sftpPacket(sshFxpData, 5, make([]byte, 1234)),
	}
	// Feed the client stream one byte at a time around the interleaved
	// server answers, as the copy loops would with tiny reads.
	a.fromClient(client[0])
	a.fromServer(server[0])
	var rest []byte
	for _, p := range client[1:4] {
		rest = append(rest, p...)
	}
	for i := range rest {
		a.fromClient(rest[i : i+1])
	}
	a.fromServer(server[1])
	a.fromClient(client[4])
	a.fromServer(server[2])
	for _, p := range client[5:] {
		a.fromClient(p)
	}
	a.close()

	got := map[string]map[string]any{}
	for _, e := range events.ofType(state.EventSFTP) {
		key := e.Details["op"].(string)
		if p, ok := e.Details["path"].(string); ok {
			key += " " + p
		}
		got[key] = e.Details
	}
	tests := []struct {
		key  string
		want map[string]any
	}{
		{"close /etc/motd", map[string]any{"flags": "write|creat|trunc", "bytes_written": int64(20004), "bytes_read": int64(0)}},
		{"close /data", map[string]any{"flags": "read", "bytes_read": int64(1234)}},
		{"remove /tmp/x", nil},
		{"rename /a", map[string]any{"to": "/b"}},
		{"rename /c", map[string]any{"to": "/d"}},
		{"mkdir /dir", nil},
		{"rmdir /dir", nil},
	}
	for _, tt := range tests {
		d, ok := got[tt.key]
		if !ok {
			t.Errorf("no event %q; got %v", tt.key, got)
			continue
		}
		for k, v := range tt.want {
			if d[k] != v {
				t.Errorf("%s: %s = %v; want %v", tt.key, k, d[k], v)
			}
		}
	}
	if len(got) != len(tests) {
		t.Errorf("got %d events; want %d: %v", len(got), len(tests), got)
	}
}

func TestSFTPStreamRejectsGarbage(t *testing.T) {
	events := &eventLog{}
	a := newTestSFTPAudit(events)
	a.fromClient([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	a.fromClient(sftpPacket(sshFxpRemove, 1, "/x"))
	if !a.in.broken {
		t.Errorf("a 4 GiB packet length did not stop the parser")
	}
	if n := len(events.ofType(state.EventSFTP)); n != 0 {
		t.Errorf("got %d events after garbage; want 0", n)
	}
}

func FuzzSFTPAudit(f *testing.F) {
	f.Add(sftpPacket(sshFxpOpen, 1, "/etc/motd", uint32(3), uint32(0)), sftpPacket(sshFxpHandle, 1, "H"))
	f.Add(sftpPacket(sshFxpWrite, 2, "H", uint64(0), []byte("data")), sftpPacket(sshFxpData, 2, "xx"))
	f.Add(sftpPacket(sshFxpExt, 3, "posix-rename@openssh.com", "/a"), []byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in, out []byte) {
		a := newTestSFTPAudit(&eventLog{})
		for len(in) > 0 || len(out) > 0 {
			n := min(len(in), 7)
			a.fromClient(in[:n])
			in = in[n:]
			m := min(len(out), 5)
			a.fromServer(out[:m])
			out = out[m:]
		}
		a.close()
	})
}
