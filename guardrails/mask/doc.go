// Package mask finds secrets and personal data in bytes and replaces them by
// a readable marker such as [MASKED:aws_key].
//
// A [Masker] is compiled once from [Rule]s (named detectors or custom
// regular expressions) and is safe for concurrent use. It masks whole values
// ([Masker.Mask], used for database result cells) and says whether a column
// name is masked as a whole ([Masker.MaskColumn]). A [Scanner] masks a byte
// stream such as terminal output: matches that straddle two writes are
// caught because the scanner keeps a bounded carry (the trailing partial
// line, at most MaxCarry bytes) and scans it again with the next write.
//
// A nil *Masker and a nil *Scanner are valid and mask nothing: Scanner.Next
// then returns its input as is, so the no-rules path does no work.
//
// # Limits
//
// Masking is pattern matching over bytes as they are written. It does not
// see what a terminal finally displays: a secret drawn in pieces by cursor
// movement, or broken by colour escape sequences, is not caught. A secret
// longer than MaxCarry on one line, or split by a pause of the Scanner's
// caller (see Flush), may escape in part. Private key blocks are masked from
// their BEGIN line to their END line whatever their size; output after a
// BEGIN line without END stays masked until the stream ends.
//
// # Imports
//
// mask imports nothing of postern.
package mask
