package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Proto package prefixes of the services the harness calls.
const (
	BasePkg    = "hashicorp.nomad.plugins.base.proto."
	DriverPkg  = "hashicorp.nomad.plugins.drivers.proto."
	SpecPkg    = "hashicorp.nomad.plugins.shared.hclspec."
	StructsPkg = "hashicorp.nomad.plugins.shared.structs."
)

// ProtoFiles are the repo-relative .proto files compiled at test time.
var ProtoFiles = []string{
	"nomad_rkt_driver/protocol/gen/base.proto",
	"nomad_rkt_driver/protocol/gen/driver.proto",
	"nomad_rkt_driver/protocol/gen/hcl_spec.proto",
	"nomad_rkt_driver/protocol/gen/attribute.proto",
	"nomad_rkt_driver/protocol/gen/recoverable_error.proto",
	"nomad_rkt_driver/protocol/gen/grpc_controller.proto",
	"nomad_rkt_driver/protocol/gen/grpc_stdio.proto",
}

var (
	protoOnce  sync.Once
	protoFiles linker.Files
	protoErr   error
)

// Descriptors compiles the project's protos once (with the standard
// google/protobuf imports) and returns a resolver over them.
func Descriptors() (linker.Resolver, error) {
	protoOnce.Do(func() {
		c := protocompile.Compiler{
			Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
				ImportPaths: []string{RepoRoot()},
			}),
		}
		protoFiles, protoErr = c.Compile(context.Background(), ProtoFiles...)
	})
	if protoErr != nil {
		return nil, fmt.Errorf("compiling %v: %w", ProtoFiles, protoErr)
	}
	return protoFiles.AsResolver(), nil
}

// MessageDesc looks a message up by its full name.
func MessageDesc(fullName string) (protoreflect.MessageDescriptor, error) {
	r, err := Descriptors()
	if err != nil {
		return nil, err
	}
	d, err := r.FindDescriptorByName(protoreflect.FullName(fullName))
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", fullName, err)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, not a message", fullName, d)
	}
	return md, nil
}

// NewMessage builds a dynamic message of the named type from protojson text
// ("" or "{}" for an empty message).
func NewMessage(fullName, jsonText string) (*dynamicpb.Message, error) {
	md, err := MessageDesc(fullName)
	if err != nil {
		return nil, err
	}
	m := dynamicpb.NewMessage(md)
	if strings.TrimSpace(jsonText) != "" {
		if err := protojson.Unmarshal([]byte(jsonText), m); err != nil {
			return nil, fmt.Errorf("building %s from %s: %w", fullName, jsonText, err)
		}
	}
	return m, nil
}

// Method resolves "/pkg.Service/Method" to its descriptor.
func Method(path string) (protoreflect.MethodDescriptor, error) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) != 2 {
		return nil, fmt.Errorf("bad method path %q", path)
	}
	r, err := Descriptors()
	if err != nil {
		return nil, err
	}
	d, err := r.FindDescriptorByName(protoreflect.FullName(parts[0]))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", parts[0], err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", parts[0])
	}
	md := sd.Methods().ByName(protoreflect.Name(parts[1]))
	if md == nil {
		return nil, fmt.Errorf("service %s has no method %s", parts[0], parts[1])
	}
	return md, nil
}

// Invoke makes a unary call; req may be a proto.Message or protojson text.
func Invoke(ctx context.Context, conn *grpc.ClientConn, path string, req any) (*dynamicpb.Message, error) {
	md, err := Method(path)
	if err != nil {
		return nil, err
	}
	in, err := toRequest(md, req)
	if err != nil {
		return nil, err
	}
	out := dynamicpb.NewMessage(md.Output())
	if err := conn.Invoke(ctx, path, in, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Stream is a server-streaming call with typed receives.
type Stream struct {
	grpc.ClientStream
	out protoreflect.MessageDescriptor
}

// Recv receives the next message of the method's output type.
func (s *Stream) Recv() (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(s.out)
	if err := s.RecvMsg(m); err != nil {
		return nil, err
	}
	return m, nil
}

// OpenStream opens a server-streaming call and sends its single request.
func OpenStream(ctx context.Context, conn *grpc.ClientConn, path string, req any) (*Stream, error) {
	md, err := Method(path)
	if err != nil {
		return nil, err
	}
	in, err := toRequest(md, req)
	if err != nil {
		return nil, err
	}
	desc := &grpc.StreamDesc{StreamName: string(md.Name()), ServerStreams: true}
	cs, err := conn.NewStream(ctx, desc, path)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(in); err != nil {
		return nil, err
	}
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	return &Stream{ClientStream: cs, out: md.Output()}, nil
}

func toRequest(md protoreflect.MethodDescriptor, req any) (proto.Message, error) {
	switch r := req.(type) {
	case nil:
		return dynamicpb.NewMessage(md.Input()), nil
	case string:
		return NewMessage(string(md.Input().FullName()), r)
	case proto.Message:
		return r, nil
	default:
		return nil, fmt.Errorf("unsupported request type %T", req)
	}
}

// AsMap renders a message as a generic JSON map with proto field names and
// unpopulated fields included (enums as names, 64-bit ints as strings).
func AsMap(m proto.Message) map[string]any {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return map[string]any{"__marshal_error": err.Error()}
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return map[string]any{"__unmarshal_error": err.Error()}
	}
	return out
}

// Field returns a populated message field by name, or nil if unset.
func Field(m protoreflect.Message, name string) protoreflect.Message {
	fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || !m.Has(fd) {
		return nil
	}
	return m.Get(fd).Message()
}

// StatusDetail0 decodes details[0] of a gRPC error status as the given
// message type, checking its type URL.
func StatusDetail0(err error, fullName string) (*dynamicpb.Message, error) {
	st, ok := status.FromError(err)
	if !ok {
		return nil, fmt.Errorf("not a gRPC status error: %v", err)
	}
	details := st.Proto().GetDetails()
	if len(details) == 0 {
		return nil, fmt.Errorf("status %v has no details", st.Code())
	}
	wantURL := "type.googleapis.com/" + fullName
	if details[0].GetTypeUrl() != wantURL {
		return nil, fmt.Errorf("details[0] type URL %q, want %q", details[0].GetTypeUrl(), wantURL)
	}
	m, err := NewMessage(fullName, "")
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(details[0].GetValue(), m); err != nil {
		return nil, fmt.Errorf("decoding details[0] as %s: %w", fullName, err)
	}
	return m, nil
}
