// Package atomicfile writes files so that readers, other processes and a
// crash never see a partial one: the data goes to a synced temporary file
// beside the target, which is then renamed (or, for a file created once,
// linked) into place, and the directory is synced so the new name is
// durable.
//
// It imports nothing of postern.
package atomicfile
