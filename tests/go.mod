module github.com/gatehouse-mcp/gatehouse/tests

go 1.26.0

replace github.com/gatehouse-mcp/gatehouse/gen => ../gen
replace github.com/gatehouse-mcp/gatehouse/internal => ../internal
replace github.com/gatehouse-mcp/gatehouse/authsvc => ../authsvc
replace github.com/gatehouse-mcp/gatehouse/policysvc => ../policysvc
replace github.com/gatehouse-mcp/gatehouse/registrysvc => ../registrysvc
replace github.com/gatehouse-mcp/gatehouse/bridgesvc => ../bridgesvc
replace github.com/gatehouse-mcp/gatehouse/auditsvc => ../auditsvc
replace github.com/gatehouse-mcp/gatehouse/ingress => ../ingress
replace github.com/gatehouse-mcp/gatehouse/cmd/gatehouse => ../cmd/gatehouse
