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

require (
	connectrpc.com/connect v1.21.1
	github.com/gatehouse-mcp/gatehouse/auditsvc v0.0.0-00010101000000-000000000000
	github.com/gatehouse-mcp/gatehouse/gen v0.0.0-00010101000000-000000000000
	github.com/gatehouse-mcp/gatehouse/internal v0.0.0-00010101000000-000000000000
	github.com/modelcontextprotocol/go-sdk v1.8.0
	google.golang.org/grpc v1.85.0
)

require (
	connectrpc.com/grpchealth v1.5.0 // indirect
	connectrpc.com/grpcreflect v1.3.1 // indirect
	github.com/google/jsonschema-go v0.4.3 // indirect
	github.com/segmentio/asm v1.1.3 // indirect
	github.com/segmentio/encoding v0.5.4 // indirect
	github.com/yosida95/uritemplate/v3 v3.0.2 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/oauth2 v0.36.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	golang.org/x/time v0.15.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
