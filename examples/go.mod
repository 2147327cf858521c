module github.com/gatehouse-mcp/gatehouse/examples

go 1.26.0

