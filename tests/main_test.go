// Package tests holds Gatehouse's end-to-end tests: real `gatehouse up` processes, real MCP
// SDK clients and servers, the official conformance suite.
package tests

import (
	"testing"

	"github.com/gatehouse-mcp/gatehouse/tests/internal/gatehousetest"
)

func TestMain(m *testing.M) { gatehousetest.Main(m) }
