//go:build h6wip

package bastion

import (
	"testing"

	"github.com/posternhq/postern/recorder"
)

func newTestRecorder(t *testing.T, dir string) *recorder.Recorder {
	return &recorder.Recorder{}
}
