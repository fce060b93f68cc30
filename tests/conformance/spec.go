package conformance

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// literalFuncs is the function set available to Literal expressions, the same
// names the Nomad agent offers when it converts a plugin's schema.
var literalFuncs = map[string]function.Function{
	"abs":        stdlib.AbsoluteFunc,
	"coalesce":   stdlib.CoalesceFunc,
	"concat":     stdlib.ConcatFunc,
	"hasindex":   stdlib.HasIndexFunc,
	"int":        stdlib.IntFunc,
	"jsondecode": stdlib.JSONDecodeFunc,
	"jsonencode": stdlib.JSONEncodeFunc,
	"length":     stdlib.LengthFunc,
	"lower":      stdlib.LowerFunc,
	"max":        stdlib.MaxFunc,
	"min":        stdlib.MinFunc,
	"reverse":    stdlib.ReverseFunc,
	"strlen":     stdlib.StrlenFunc,
	"substr":     stdlib.SubstrFunc,
	"upper":      stdlib.UpperFunc,
}

func specErr(summary, format string, args ...any) hcl.Diagnostics {
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
	}}
}

// ConvertSpec turns an hclspec.Spec message (dynamic) into an hcldec.Spec,
// following the rules of protocol.md §3.1.
func ConvertSpec(spec protoreflect.Message) (hcldec.Spec, hcl.Diagnostics) {
	if spec == nil || !spec.IsValid() {
		return nil, specErr("Nil spec", "no spec message was given")
	}
	return convert(spec, "")
}

// convert handles one Spec; implied is the Object key naming this child, or "".
func convert(spec protoreflect.Message, implied string) (hcldec.Spec, hcl.Diagnostics) {
	oneof := spec.Descriptor().Oneofs().ByName("block")
	if oneof == nil {
		return nil, specErr("Not a spec", "message %s has no 'block' oneof", spec.Descriptor().FullName())
	}
	fd := spec.WhichOneof(oneof)
	if fd == nil {
		return nil, specErr("Empty spec", "a spec message has none of its oneof fields set")
	}
	m := spec.Get(fd).Message()
	switch fd.Name() {
	case "object":
		return convertObject(m)
	case "array":
		return convertArray(m)
	case "Attr":
		return convertAttr(m, implied)
	case "block_value":
		return convertBlock(m, implied)
	case "block_attrs":
		return convertBlockAttrs(m, implied)
	case "block_list", "block_set":
		return convertBlockListOrSet(m, implied, fd.Name() == "block_set")
	case "block_map":
		return convertBlockMap(m, implied)
	case "default":
		return convertDefault(m)
	case "literal":
		return convertLiteral(m)
	}
	return nil, specErr("Unknown spec kind", "oneof field %q is not understood", fd.Name())
}

func str(m protoreflect.Message, name string) string {
	return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name))).String()
}

func boolean(m protoreflect.Message, name string) bool {
	return m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name))).Bool()
}

func uintField(m protoreflect.Message, name string) int {
	return int(m.Get(m.Descriptor().Fields().ByName(protoreflect.Name(name))).Uint())
}

// nameOr picks the explicit name if set, else the implied one.
func nameOr(m protoreflect.Message, implied string) string {
	if n := str(m, "name"); n != "" {
		return n
	}
	return implied
}

func convertObject(m protoreflect.Message) (hcldec.Spec, hcl.Diagnostics) {
	out := hcldec.ObjectSpec{}
	var diags hcl.Diagnostics
	attrs := m.Get(m.Descriptor().Fields().ByName("attributes")).Map()
	keys := make([]string, 0, attrs.Len())
	attrs.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k.String())
		return true
	})
	sort.Strings(keys)
	for _, k := range keys {
		child, d := convert(attrs.Get(protoreflect.ValueOfString(k).MapKey()).Message(), k)
		diags = append(diags, d...)
		out[k] = child
	}
	return out, diags
}

func convertArray(m protoreflect.Message) (hcldec.Spec, hcl.Diagnostics) {
	vals := m.Get(m.Descriptor().Fields().ByName("values")).List()
	out := make(hcldec.TupleSpec, 0, vals.Len())
	var diags hcl.Diagnostics
	for i := 0; i < vals.Len(); i++ {
		child, d := convert(vals.Get(i).Message(), "")
		diags = append(diags, d...)
		out = append(out, child)
	}
	return out, diags
}

// typeOf parses an HCL type expression such as list(string).
func typeOf(expr string) (cty.Type, hcl.Diagnostics) {
	e, diags := hclsyntax.ParseExpression([]byte(expr), "spec-type", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilType, diags
	}
	return typeexpr.TypeConstraint(e)
}

func convertAttr(m protoreflect.Message, implied string) (hcldec.Spec, hcl.Diagnostics) {
	ty, diags := typeOf(str(m, "type"))
	if diags.HasErrors() {
		return nil, diags
	}
	name := nameOr(m, implied)
	if name == "" {
		return nil, append(diags, specErr("Missing name in attribute spec",
			"an Attr outside an Object (e.g. inside Default or Array) must set its name")...)
	}
	return &hcldec.AttrSpec{Name: name, Type: ty, Required: boolean(m, "required")}, diags
}

func nestedOf(m protoreflect.Message, kind string) (hcldec.Spec, hcl.Diagnostics) {
	n := Field(m, "nested")
	if n == nil {
		return nil, specErr("Missing nested spec", "a %s spec needs a nested spec for the block body", kind)
	}
	return convert(n, "")
}

func convertBlock(m protoreflect.Message, implied string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := nestedOf(m, "block")
	return &hcldec.BlockSpec{TypeName: nameOr(m, implied), Required: boolean(m, "required"), Nested: nested}, diags
}

func convertBlockAttrs(m protoreflect.Message, implied string) (hcldec.Spec, hcl.Diagnostics) {
	ty, diags := typeOf(str(m, "type"))
	if diags.HasErrors() {
		return nil, diags
	}
	name := nameOr(m, implied)
	if name == "" {
		return nil, append(diags, specErr("Missing name in block_attrs spec", "block_attrs needs a block type name")...)
	}
	return &hcldec.BlockAttrsSpec{TypeName: name, ElementType: ty, Required: boolean(m, "required")}, diags
}

func convertBlockListOrSet(m protoreflect.Message, implied string, set bool) (hcldec.Spec, hcl.Diagnostics) {
	kind := "block_list"
	if set {
		kind = "block_set"
	}
	nested, diags := nestedOf(m, kind)
	name := nameOr(m, implied)
	if name == "" {
		return nil, append(diags, specErr("Missing name in "+kind+" spec", "%s needs a block type name", kind)...)
	}
	if set {
		return &hcldec.BlockSetSpec{TypeName: name, Nested: nested,
			MinItems: uintField(m, "min_items"), MaxItems: uintField(m, "max_items")}, diags
	}
	return &hcldec.BlockListSpec{TypeName: name, Nested: nested,
		MinItems: uintField(m, "min_items"), MaxItems: uintField(m, "max_items")}, diags
}

func convertBlockMap(m protoreflect.Message, implied string) (hcldec.Spec, hcl.Diagnostics) {
	nested, diags := nestedOf(m, "block_map")
	name := nameOr(m, implied)
	if name == "" {
		return nil, append(diags, specErr("Missing name in block_map spec", "block_map needs a block type name")...)
	}
	lf := m.Get(m.Descriptor().Fields().ByName("labels")).List()
	labels := make([]string, 0, lf.Len())
	for i := 0; i < lf.Len(); i++ {
		labels = append(labels, lf.Get(i).String())
	}
	if len(labels) == 0 {
		return nil, append(diags, specErr("Invalid block label name list", "a block_map needs at least one label")...)
	}
	return &hcldec.BlockMapSpec{TypeName: name, LabelNames: labels, Nested: nested}, diags
}

func convertDefault(m protoreflect.Message) (hcldec.Spec, hcl.Diagnostics) {
	pm, dm := Field(m, "primary"), Field(m, "default")
	if pm == nil || dm == nil {
		return nil, specErr("Incomplete default spec", "a Default needs both primary and default")
	}
	primary, diags := convert(pm, "")
	if diags.HasErrors() {
		return nil, diags
	}
	def, d := convert(dm, "")
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	return &hcldec.DefaultSpec{Primary: primary, Default: def}, diags
}

func convertLiteral(m protoreflect.Message) (hcldec.Spec, hcl.Diagnostics) {
	e, diags := hclsyntax.ParseExpression([]byte(str(m, "value")), "spec-literal", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	v, d := e.Value(&hcl.EvalContext{Functions: literalFuncs})
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, diags
	}
	return &hcldec.LiteralSpec{Value: v}, diags
}
