// Package s3store keeps postern's recordings in an S3-compatible bucket.
//
// A [Store] is opened once per server with [Open] (or [OpenURL] from a
// storage URL, see [ParseURL]); Open checks the bucket with HeadBucket, so
// wrong credentials or a missing bucket are reported at start-up, naming
// the setting. Credentials come only from the standard AWS chain
// (environment, shared config and credentials files, web identity / IRSA,
// ECS and EC2 instance roles); a URL carrying credentials is refused.
//
// # Streaming
//
// While a session is recorded its local spool file is the source of truth.
// [Store.Begin] returns an [Upload] that follows the spool as it grows: a
// goroutine reads full parts (PartSize, at least 5 MiB) from the file and
// sends them as a multipart upload; [Upload.Complete] sends the last part
// and completes the upload. A recording that never reaches one part is sent
// with a single PUT. Nothing on the caller's data path waits for the
// network: [Upload.Grow] only records the new size. With
// Options.PartDelimiter set, a part (but the last) ends just after that byte
// (a whole cast line), so that [Store.Resume] lets another process complete
// an upload its owner left unfinished, from the bytes it checkpointed
// elsewhere; [Upload.Durable] says how much the completed parts hold.
//
// # Faults
//
// Every write (PUT, part, create, complete) is retried with capped
// exponential backoff and full jitter while the error is transient
// (network errors, 5xx, throttling, timeouts); client errors such as a
// denied request fail at once. The first failure starts an outage and the
// next success ends it, except throttling (SlowDown, 429), which starts
// one only when a write is throttled three times in a row (it is counted
// in postern_s3_throttled_total); both are reported to the function set with
// [Store.OnHealth] (the recorder turns them into storage.outage and
// storage.recovered audit events). [Store.Health] and the
// postern_s3_backlog_bytes gauge give the bytes spooled but not yet in the
// bucket. A multipart upload the server no longer knows (NoSuchUpload) is
// restarted from the spool. [Store.AbortUploads] aborts the multipart uploads a
// crashed run left for a key.
//
// # Object settings
//
// Final objects carry Content-Type, and optionally server-side encryption
// (SSE-S3 or SSE-KMS with a key id), a storage class, tags and S3 Object
// Lock retention (mode and days from the upload).
//
// See [Amazon S3 multipart upload] and [S3 Object Lock].
//
// # Imports
//
// s3store imports nothing of postern.
//
// [Amazon S3 multipart upload]: https://docs.aws.amazon.com/AmazonS3/latest/userguide/mpuoverview.html
// [S3 Object Lock]: https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html
package s3store
