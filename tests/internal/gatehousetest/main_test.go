package gatehousetest_test

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

func TestMain(m *testing.M) { gatehousetest.Main(m) }
