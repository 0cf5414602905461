package testbed_test

import (
	"os"
	"testing"

	"github.com/harvest-hub/edge/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }
