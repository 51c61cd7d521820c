// The Kubernetes start-storm driver (see README.md): a real kube-apiserver, N pods with bound
// tokens, and N daprd-like clients against ours and Dapr's sentry.
module sentry-rs/bench/storm

go 1.26.6

require (
	github.com/dapr/dapr v1.18.3
	github.com/spiffe/go-spiffe/v2 v2.6.0
	google.golang.org/grpc v1.82.1
)

require (
	github.com/stretchr/testify v1.12.1 // indirect
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.41.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260727163830-6c54dddc4772 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
