module github.com/gatehouse-mcp/gatehouse/policysvc

go 1.26.0

replace github.com/gatehouse-mcp/gatehouse/gen => ../gen
replace github.com/gatehouse-mcp/gatehouse/internal => ../internal
