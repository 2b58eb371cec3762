package llmsim

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes what it starts: no scheduler wait, hang or SMI writer
// may outlive it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
