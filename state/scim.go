package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// SCIM provisioning.
//
// Identity providers push their users and groups to postern over SCIM
// (package certs/scim); each configured SCIM client is a directory. The
// resources are kept here as the client sent them (Attributes, JSON) with
// the columns postern looks things up by. Every change is audited in its
// own transaction, and announced on NotifySCIM so that every replica
// reloads its copy of the directory.

// NotifySCIM is the notification channel of directory changes.
const NotifySCIM = "postern_scim"

// Audit event types of SCIM provisioning.
const (
	EventSCIMUser  = "scim.user"
	EventSCIMGroup = "scim.group"
)

// ErrConflict reports a SCIM resource whose unique attribute (a user's
// userName, a group's displayName) another resource of the directory has.
var ErrConflict = errors.New("conflicts with an existing resource")

// SCIMUser is one provisioned user.
type SCIMUser struct {
	// Directory names the SCIM client that provisioned the user.
	Directory string
	// ID is postern's id of the user (SCIM "id").
	ID string
	// UserName is the SCIM userName: unique (ignoring case) among the
	// directory's users that are not deleted.
	UserName string
	// ExternalID is the client's id of the user (SCIM "externalId").
	ExternalID string
	// Active is SCIM "active".
	Active bool
	// Deleted marks a user the client deleted: kept so that postern keeps
	// refusing it, invisible over SCIM.
	Deleted bool
	// Attributes are the SCIM attributes as stored (JSON object).
	Attributes string
	// Created and Modified are when the user was created and last changed.
	Created, Modified time.Time
	// Version counts the changes (the ETag).
	Version int64
}

// SCIMGroup is one provisioned group.
type SCIMGroup struct {
	// Directory names the SCIM client that provisioned the group.
	Directory string
	// ID is postern's id of the group.
	ID string
	// DisplayName is the group's name, what roles and approver lists name.
	DisplayName string
	// ExternalID is the client's id of the group.
	ExternalID string
	// Members are the ids of the member users.
	Members []string
	// Attributes are the other SCIM attributes as stored (JSON object).
	Attributes string
	// Created and Modified are when the group was created and last changed.
	Created, Modified time.Time
	// Version counts the changes.
	Version int64
}

const (
	scimUserColumns  = `directory, id, user_name, external_id, active, deleted, attributes, created, modified, version`
	scimGroupColumns = `directory, id, display_name, external_id, members, attributes, created, modified, version`
)

// PutSCIMUser inserts u or replaces the user with its id (Version and
// Modified are set here, Created kept), audits the change as scim.user with
// details, and announces it. It returns ErrConflict if another user of the
// directory that is not deleted has the same userName, ignoring case.
func (s *Store) PutSCIMUser(ctx context.Context, u SCIMUser, details map[string]any) (SCIMUser, error) {
	now := s.now().UTC()
	err := s.Write(ctx, func(t *Tx) error {
		var n int
		if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM scim_users WHERE directory = ? AND user_key = ? AND id <> ? AND deleted = 0`,
			u.Directory, strings.ToLower(u.UserName), u.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 && !u.Deleted {
			return ErrConflict
		}
		var created string
		var version int64
		err := t.tx.QueryRowContext(t.ctx, `SELECT created, version FROM scim_users WHERE directory = ? AND id = ?`, u.Directory, u.ID).
			Scan(&created, &version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			u.Created = now
		case err != nil:
			return err
		default:
			if u.Created, err = parseTime(created); err != nil {
				return err
			}
		}
		u.Version, u.Modified = version+1, now
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM scim_users WHERE directory = ? AND id = ?`, u.Directory, u.ID); err != nil {
			return err
		}
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO scim_users (directory, id, user_key, user_name, external_id, active, deleted,
			attributes, created, modified, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			u.Directory, u.ID, strings.ToLower(u.UserName), u.UserName, u.ExternalID, boolInt(u.Active), boolInt(u.Deleted),
			u.Attributes, formatTime(u.Created), formatTime(u.Modified), u.Version); err != nil {
			return err
		}
		d := map[string]any{"directory": u.Directory, "id": u.ID, "user_name": u.UserName, "active": u.Active, "deleted": u.Deleted}
		for k, v := range details {
			d[k] = v
		}
		_, err = t.Append(Event{Time: now, Type: EventSCIMUser, Actor: "scim:" + u.Directory, Details: d})
		return err
	})
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return SCIMUser{}, err
		}
		return SCIMUser{}, fmt.Errorf("store scim user: %w", err)
	}
	s.announceSCIM(ctx)
	return u, nil
}

// GetSCIMUser returns the user id of directory (deleted ones too), or an
// error wrapping ErrNotFound.
func (s *Store) GetSCIMUser(ctx context.Context, directory, id string) (SCIMUser, error) {
	us, err := queryAll(ctx, s.db, "get scim user", `SELECT `+scimUserColumns+` FROM scim_users WHERE directory = ? AND id = ?`,
		[]any{directory, id}, scanSCIMUser)
	if err != nil {
		return SCIMUser{}, err
	}
	if len(us) == 0 {
		return SCIMUser{}, fmt.Errorf("scim user %s: %w", id, ErrNotFound)
	}
	return us[0], nil
}

// SCIMUsers returns every user of directory (every directory if empty),
// deleted ones too, in id order.
func (s *Store) SCIMUsers(ctx context.Context, directory string) ([]SCIMUser, error) {
	q, args := `SELECT `+scimUserColumns+` FROM scim_users`, []any{}
	if directory != "" {
		q += ` WHERE directory = ?`
		args = append(args, directory)
	}
	return queryAll(ctx, s.db, "list scim users", q+` ORDER BY directory, id`, args, scanSCIMUser)
}

func scanSCIMUser(r rowScanner) (SCIMUser, error) {
	var u SCIMUser
	var active, deleted int
	var created, modified string
	if err := r.Scan(&u.Directory, &u.ID, &u.UserName, &u.ExternalID, &active, &deleted, &u.Attributes, &created, &modified, &u.Version); err != nil {
		return u, err
	}
	u.Active, u.Deleted = active != 0, deleted != 0
	var err error
	if u.Created, err = parseTime(created); err == nil {
		u.Modified, err = parseTime(modified)
	}
	return u, err
}

// PutSCIMGroup inserts g or replaces the group with its id, audits the
// change as scim.group and announces it. It returns ErrConflict if another
// group of the directory has the same displayName.
func (s *Store) PutSCIMGroup(ctx context.Context, g SCIMGroup, details map[string]any) (SCIMGroup, error) {
	now := s.now().UTC()
	members, err := json.Marshal(g.Members)
	if err != nil {
		return SCIMGroup{}, err
	}
	if g.Members == nil {
		members = []byte("[]")
	}
	err = s.Write(ctx, func(t *Tx) error {
		var n int
		if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM scim_groups WHERE directory = ? AND display_name = ? AND id <> ?`,
			g.Directory, g.DisplayName, g.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrConflict
		}
		var created string
		var version int64
		err := t.tx.QueryRowContext(t.ctx, `SELECT created, version FROM scim_groups WHERE directory = ? AND id = ?`, g.Directory, g.ID).
			Scan(&created, &version)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			g.Created = now
		case err != nil:
			return err
		default:
			if g.Created, err = parseTime(created); err != nil {
				return err
			}
		}
		g.Version, g.Modified = version+1, now
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM scim_groups WHERE directory = ? AND id = ?`, g.Directory, g.ID); err != nil {
			return err
		}
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO scim_groups (`+scimGroupColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			g.Directory, g.ID, g.DisplayName, g.ExternalID, string(members), g.Attributes, formatTime(g.Created), formatTime(g.Modified),
			g.Version); err != nil {
			return err
		}
		d := map[string]any{"directory": g.Directory, "id": g.ID, "display_name": g.DisplayName, "members": len(g.Members)}
		for k, v := range details {
			d[k] = v
		}
		_, err = t.Append(Event{Time: now, Type: EventSCIMGroup, Actor: "scim:" + g.Directory, Details: d})
		return err
	})
	if err != nil {
		if errors.Is(err, ErrConflict) {
			return SCIMGroup{}, err
		}
		return SCIMGroup{}, fmt.Errorf("store scim group: %w", err)
	}
	s.announceSCIM(ctx)
	return g, nil
}

// DeleteSCIMGroup removes group id of directory (audited), or returns an
// error wrapping ErrNotFound.
func (s *Store) DeleteSCIMGroup(ctx context.Context, directory, id string) error {
	now := s.now().UTC()
	err := s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `DELETE FROM scim_groups WHERE directory = ? AND id = ?`, directory, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("scim group %s: %w", id, ErrNotFound)
		}
		_, err = t.Append(Event{Time: now, Type: EventSCIMGroup, Actor: "scim:" + directory,
			Details: map[string]any{"directory": directory, "id": id, "deleted": true}})
		return err
	})
	if err != nil {
		return err
	}
	s.announceSCIM(ctx)
	return nil
}

// GetSCIMGroup returns group id of directory, or an error wrapping
// ErrNotFound.
func (s *Store) GetSCIMGroup(ctx context.Context, directory, id string) (SCIMGroup, error) {
	gs, err := queryAll(ctx, s.db, "get scim group", `SELECT `+scimGroupColumns+` FROM scim_groups WHERE directory = ? AND id = ?`,
		[]any{directory, id}, scanSCIMGroup)
	if err != nil {
		return SCIMGroup{}, err
	}
	if len(gs) == 0 {
		return SCIMGroup{}, fmt.Errorf("scim group %s: %w", id, ErrNotFound)
	}
	return gs[0], nil
}

// SCIMGroups returns every group of directory (every directory if empty),
// in id order.
func (s *Store) SCIMGroups(ctx context.Context, directory string) ([]SCIMGroup, error) {
	q, args := `SELECT `+scimGroupColumns+` FROM scim_groups`, []any{}
	if directory != "" {
		q += ` WHERE directory = ?`
		args = append(args, directory)
	}
	return queryAll(ctx, s.db, "list scim groups", q+` ORDER BY directory, id`, args, scanSCIMGroup)
}

func scanSCIMGroup(r rowScanner) (SCIMGroup, error) {
	var g SCIMGroup
	var members, created, modified string
	if err := r.Scan(&g.Directory, &g.ID, &g.DisplayName, &g.ExternalID, &members, &g.Attributes, &created, &modified, &g.Version); err != nil {
		return g, err
	}
	if err := json.Unmarshal([]byte(members), &g.Members); err != nil {
		return g, fmt.Errorf("scim group %s members: %w", g.ID, err)
	}
	var err error
	if g.Created, err = parseTime(created); err == nil {
		g.Modified, err = parseTime(modified)
	}
	return g, err
}

// AddSCIMLocks records that locks were made for user id of directory.
func (s *Store) AddSCIMLocks(ctx context.Context, directory, id string, locks []string) error {
	return s.Write(ctx, func(t *Tx) error {
		for _, l := range locks {
			if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO scim_locks (directory, user_id, lock_id) VALUES (?, ?, ?)`,
				directory, id, l); err != nil {
				return fmt.Errorf("record scim lock: %w", err)
			}
		}
		return nil
	})
}

// SCIMLocks returns the locks recorded for user id of directory.
func (s *Store) SCIMLocks(ctx context.Context, directory, id string) ([]string, error) {
	return queryAll(ctx, s.db, "list scim locks", `SELECT lock_id FROM scim_locks WHERE directory = ? AND user_id = ? ORDER BY lock_id`,
		[]any{directory, id}, func(r rowScanner) (string, error) {
			var l string
			err := r.Scan(&l)
			return l, err
		})
}

// ForgetSCIMLocks removes the record of locks for user id of directory
// (after they were removed).
func (s *Store) ForgetSCIMLocks(ctx context.Context, directory, id string, locks []string) error {
	return s.Write(ctx, func(t *Tx) error {
		for _, l := range locks {
			if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM scim_locks WHERE directory = ? AND user_id = ? AND lock_id = ?`,
				directory, id, l); err != nil {
				return fmt.Errorf("forget scim lock: %w", err)
			}
		}
		return nil
	})
}

// announceSCIM tells every replica that a directory changed.
func (s *Store) announceSCIM(ctx context.Context) {
	if err := s.Notify(context.WithoutCancel(ctx), NotifySCIM, "changed"); err != nil {
		s.log.Warn("announce scim change", "err", err)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
