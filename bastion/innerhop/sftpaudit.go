package innerhop

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"

	"github.com/posternhq/postern/state"
)

// SFTP audit.
//
// The inner hop watches SFTP sessions passively: it copies the bytes both
// ways untouched and parses a copy of each direction into audit events. This
// is a small hand-written parser because the SFTP libraries (pkg/sftp) are a
// client or a server that own the stream; none offers a passive observer of
// somebody else's session. Only the packet heads are kept: a WRITE's or a
// DATA's payload is counted, never buffered.
//
// Packets (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks): uint32
// length, byte type, then for requests uint32 id. From the client: OPEN,
// CLOSE, READ, WRITE, REMOVE, MKDIR, RMDIR, RENAME and the
// posix-rename@openssh.com extension; from the server: HANDLE
// (binds a handle to the OPEN it answers) and DATA (counts bytes read).
// Events (type sftp.op): remove, mkdir, rmdir and rename when the client asks
// for them; a file's open flags and read/written byte counts when it is
// closed (or when the session ends with it still open).

const (
	sshFxpOpen    = 3
	sshFxpClose   = 4
	sshFxpRead    = 5
	sshFxpWrite   = 6
	sshFxpRemove  = 13
	sshFxpMkdir   = 14
	sshFxpRmdir   = 15
	sshFxpRename  = 18
	sshFxpExt     = 200
	sshFxpHandle  = 102
	sshFxpData    = 103
	sftpHeadLimit = 8 << 10  // bytes of a packet kept for parsing
	sftpMaxPacket = 16 << 20 // larger lengths mean the stream is not SFTP
	sftpMaxOpen   = 4096     // open handles tracked per session
)

// SFTP open flags (pflags).
const (
	sshFxfRead   = 0x01
	sshFxfWrite  = 0x02
	sshFxfAppend = 0x04
	sshFxfCreat  = 0x08
	sshFxfTrunc  = 0x10
	sshFxfExcl   = 0x20
)

// sftpStream splits one direction of an SFTP stream into packet heads.
type sftpStream struct {
	lenBuf [4]byte
	lenN   int
	remain int    // body bytes still to come of the current packet
	total  int    // body length of the current packet
	head   []byte // first bytes of the current body, up to sftpHeadLimit
	broken bool
	packet func(head []byte, total int)
}

// write consumes p; packet is called for every complete packet.
func (s *sftpStream) write(p []byte) {
	for len(p) > 0 && !s.broken {
		if s.remain == 0 {
			n := copy(s.lenBuf[s.lenN:], p)
			s.lenN += n
			p = p[n:]
			if s.lenN < 4 {
				return
			}
			s.lenN = 0
			s.total = int(binary.BigEndian.Uint32(s.lenBuf[:]))
			if s.total == 0 || s.total > sftpMaxPacket {
				s.broken = true
				return
			}
			s.remain = s.total
			s.head = s.head[:0]
			continue
		}
		n := min(len(p), s.remain)
		if keep := min(n, sftpHeadLimit-len(s.head)); keep > 0 {
			s.head = append(s.head, p[:keep]...)
		}
		s.remain -= n
		p = p[n:]
		if s.remain == 0 {
			s.packet(s.head, s.total)
		}
	}
}

// sftpReader reads SFTP wire types from a packet head.
type sftpReader struct {
	b  []byte
	ok bool
}

func (r *sftpReader) u8() byte {
	if len(r.b) < 1 {
		r.ok = false
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *sftpReader) u32() uint32 {
	if len(r.b) < 4 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *sftpReader) u64() uint64 {
	if len(r.b) < 8 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// str reads a string; a string cut by the head limit is returned truncated.
func (r *sftpReader) str() string {
	n := int(r.u32())
	if !r.ok {
		return ""
	}
	if n > len(r.b) {
		v := string(r.b)
		r.b = nil
		return v
	}
	v := string(r.b[:n])
	r.b = r.b[n:]
	return v
}

// sftpFile is an open file handle.
type sftpFile struct {
	path          string
	flags         uint32
	read, written int64
}

// sftpAudit turns an SFTP session into sftp.op audit events.
type sftpAudit struct {
	c       *hopConn
	session string

	mu      sync.Mutex
	in, out sftpStream
	opens   map[uint32]*sftpFile // OPEN request id → file, until HANDLE
	reads   map[uint32]*sftpFile // READ request id → file, until DATA/STATUS
	handles map[string]*sftpFile
}

func newSFTPAudit(c *hopConn, session string) *sftpAudit {
	a := &sftpAudit{c: c, session: session,
		opens: map[uint32]*sftpFile{}, reads: map[uint32]*sftpFile{}, handles: map[string]*sftpFile{}}
	a.in.packet = a.clientPacket
	a.out.packet = a.serverPacket
	return a
}

// fromClient observes client-to-server bytes.
func (a *sftpAudit) fromClient(p []byte) {
	a.mu.Lock()
	a.in.write(p)
	a.mu.Unlock()
}

// fromServer observes server-to-client bytes.
func (a *sftpAudit) fromServer(p []byte) {
	a.mu.Lock()
	a.out.write(p)
	a.mu.Unlock()
}

// clientPacket handles one client packet head. Called with mu held.
func (a *sftpAudit) clientPacket(head []byte, total int) {
	r := &sftpReader{b: head, ok: true}
	typ := r.u8()
	id := r.u32()
	if !r.ok {
		return
	}
	switch typ {
	case sshFxpOpen:
		path := r.str()
		flags := r.u32()
		if r.ok && len(a.opens) < sftpMaxOpen {
			a.opens[id] = &sftpFile{path: path, flags: flags}
		}
	case sshFxpRead:
		h := r.str()
		_ = r.u64()
		_ = r.u32()
		if f := a.handles[h]; r.ok && f != nil && len(a.reads) < sftpMaxOpen {
			a.reads[id] = f
		}
	case sshFxpWrite:
		h := r.str()
		_ = r.u64()
		n := r.u32()
		if f := a.handles[h]; r.ok && f != nil {
			f.written += int64(n)
		}
	case sshFxpClose:
		h := r.str()
		if f := a.handles[h]; r.ok && f != nil {
			delete(a.handles, h)
			a.emitFile("close", f)
		}
	case sshFxpRemove, sshFxpMkdir, sshFxpRmdir:
		path := r.str()
		if r.ok {
			a.emit(map[string]any{"op": sftpOpName(typ), "path": path})
		}
	case sshFxpRename:
		from := r.str()
		to := r.str()
		if r.ok {
			a.emit(map[string]any{"op": "rename", "path": from, "to": to})
		}
	case sshFxpExt:
		// OpenSSH's sftp renames with posix-rename@openssh.com.
		if r.str() == "posix-rename@openssh.com" {
			from := r.str()
			to := r.str()
			if r.ok {
				a.emit(map[string]any{"op": "rename", "path": from, "to": to})
			}
		}
	}
}

// serverPacket handles one server packet head. Called with mu held.
func (a *sftpAudit) serverPacket(head []byte, total int) {
	r := &sftpReader{b: head, ok: true}
	typ := r.u8()
	id := r.u32()
	if !r.ok {
		return
	}
	switch typ {
	case sshFxpHandle:
		h := r.str()
		if f := a.opens[id]; r.ok && f != nil {
			delete(a.opens, id)
			if len(a.handles) < sftpMaxOpen {
				a.handles[h] = f
			}
		}
	case sshFxpData:
		n := r.u32()
		if f := a.reads[id]; r.ok && f != nil {
			delete(a.reads, id)
			f.read += int64(n)
		}
	default:
		// STATUS answers a failed OPEN or READ (EOF).
		delete(a.opens, id)
		delete(a.reads, id)
	}
}

func sftpOpName(typ byte) string {
	switch typ {
	case sshFxpRemove:
		return "remove"
	case sshFxpMkdir:
		return "mkdir"
	case sshFxpRmdir:
		return "rmdir"
	}
	return "unknown"
}

// sftpFlags spells open flags as "read|write|creat".
func sftpFlags(f uint32) string {
	var parts []string
	for _, p := range []struct {
		bit  uint32
		name string
	}{{sshFxfRead, "read"}, {sshFxfWrite, "write"}, {sshFxfAppend, "append"}, {sshFxfCreat, "creat"},
		{sshFxfTrunc, "trunc"}, {sshFxfExcl, "excl"}} {
		if f&p.bit != 0 {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, "|")
}

func (a *sftpAudit) emitFile(op string, f *sftpFile) {
	a.emit(map[string]any{"op": op, "path": f.path, "flags": sftpFlags(f.flags),
		"bytes_read": f.read, "bytes_written": f.written})
}

func (a *sftpAudit) emit(details map[string]any) {
	c := a.c
	details["login"] = c.login
	c.h.audit(context.WithoutCancel(c.ctx), state.Event{Type: state.EventSFTP, Actor: c.ci.Identity.String(),
		Target: c.t.Name, Session: a.session, Details: details})
}

// close reports files still open when the session ends.
func (a *sftpAudit) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for h, f := range a.handles {
		delete(a.handles, h)
		a.emitFile("close", f)
	}
}
