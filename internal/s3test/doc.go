// Package s3test starts a real S3 server, versitygw with its posix backend,
// on 127.0.0.1 for tests of the S3 recording store.
//
// The versitygw binary comes from the tools/versitygw module; it is found
// through $POSTERN_VERSITYGW or <repo>/bin/versitygw and built there once
// if missing ("make tools" builds it ahead of time).
//
// Objects live as plain files under [Server.Dir], one top-level directory
// per bucket, so tests can look at what was stored. [Server.CreateBucket]
// makes a bucket by creating that directory and the extended attributes
// versitygw keeps a bucket's owner in, with no S3 client needed.
//
// The server belongs to the test and is killed in t.Cleanup. [Server.Stop]
// and [Server.Restart] (same port, same data) are for outage tests.
//
// This package is for tests only and must not be imported by non-test code.
package s3test
