package usererr

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestAs(t *testing.T) {
	cause := errors.New("disk full at /var/lib/postern")
	e := &Error{Code: "internal_error", Msg: "could not record", Err: cause}
	wrapped := fmt.Errorf("seal: %w", e)
	if got := As(wrapped); got != e {
		t.Fatalf("As = %v; want the user error", got)
	}
	if !errors.Is(wrapped, cause) {
		t.Error("the cause is not reachable with errors.Is")
	}
	if As(cause) != nil {
		t.Error("a plain error is not user-visible")
	}
	if strings.Contains(e.Msg, "disk") || !strings.Contains(e.Error(), "disk full") {
		t.Errorf("Msg %q must not hold the cause; Error() %q must, for logs", e.Msg, e.Error())
	}
	if e.HTTPStatus() != 400 || (&Error{Status: 503}).HTTPStatus() != 503 {
		t.Error("HTTPStatus defaults")
	}
}
