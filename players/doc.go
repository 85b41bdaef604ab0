// Package players replays recorded sessions: the terminal player behind
// `postern play` and `postern watch`, the export of casts as asciicast v2 or
// v3, and the bastion's HTTP API for sessions (GET /v1/sessions,
// /v1/sessions/{id}, /v1/sessions/{id}/cast). The web UI lives in
// players/web.
//
// # Player
//
// A [Player] streams a cast from a [Source]: it holds one event at a time,
// so casts of any size play in constant memory. Its core turns recorded
// times into playback positions (pauses longer than the idle-time limit are
// shortened to it), seeks (forward by reading on, backward by reopening the
// source and replaying the output after a terminal reset) and finds
// markers; [Player.Run] adds the clock, the speed and the controls. The
// terminal front end ([Terminal]) owns raw mode and turns keys into
// controls.
//
// # Export
//
// [Export] re-encodes a cast as asciicast v2 (what every player reads,
// Debian's asciinema 2.2 included) or v3 (interval times, an "x" exit
// event), streaming.
//
// # Client
//
// [Client] is the client side of the API for `postern sessions`, `play` and
// `watch`; its requests are signed with the `postern login` profile
// (certs/login.APIClient). [WriteTable] and [WriteDetail] print what it
// returns, with control characters of recorded commands neutralised.
//
// # API
//
// [NewAPI] serves the sessions API: every request is authenticated
// (certs.APIAuth) and authorised by the permissions of the identity's roles
// — auditors and admins read every session, moderators also list and follow
// running ones, and anyone reads their own (recorded under their identity
// key, never matched by username); ids are validated strictly
// before they reach a store.
//
// Formats: [asciicast v2], [asciicast v3].
//
// # Imports
//
// players imports the recorder, the state store and certs; it never imports
// the bastion, approvals, guardrails or server.
//
// [asciicast v2]: https://docs.asciinema.org/manual/asciicast/v2/
// [asciicast v3]: https://docs.asciinema.org/manual/asciicast/v3/
package players
