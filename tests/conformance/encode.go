package conformance

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/msgpack"
)

// ConfigBlockBody parses HCL text and walks down the given block types (each
// must appear at most once; labels are ignored) returning the body of the
// innermost one, e.g. path ["plugin", "config"] for an agent plugin block.
// A missing innermost block yields an empty body, as the agent does for a
// plugin block without config {}.
func ConfigBlockBody(src string, path ...string) (hcl.Body, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig([]byte(src), "input.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	body := f.Body.(*hclsyntax.Body)
	for i, typ := range path {
		var found []*hclsyntax.Block
		for _, b := range body.Blocks {
			if b.Type == typ {
				found = append(found, b)
			}
		}
		switch {
		case len(found) == 0 && i == len(path)-1:
			return hcl.EmptyBody(), diags
		case len(found) != 1:
			return nil, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
				Summary: fmt.Sprintf("want exactly one %q block, found %d", typ, len(found))})
		}
		body = found[0].Body
	}
	return body, diags
}

// DecodeBody decodes a body with the spec, as the agent does.
func DecodeBody(body hcl.Body, spec hcldec.Spec) (cty.Value, hcl.Diagnostics) {
	return hcldec.Decode(body, spec, nil)
}

// EncodeValue is the agent's wire encoding of a decoded config value.
func EncodeValue(v cty.Value) ([]byte, error) {
	return msgpack.Marshal(v, v.Type())
}

// EncodeHCL runs the whole agent pipeline: HCL text → block body → cty value
// through spec → msgpack bytes.
func EncodeHCL(src string, spec hcldec.Spec, path ...string) ([]byte, cty.Value, hcl.Diagnostics) {
	body, diags := ConfigBlockBody(src, path...)
	if diags.HasErrors() {
		return nil, cty.NilVal, diags
	}
	v, d := DecodeBody(body, spec)
	diags = append(diags, d...)
	if diags.HasErrors() {
		return nil, v, diags
	}
	b, err := EncodeValue(v)
	if err != nil {
		return nil, v, append(diags, &hcl.Diagnostic{Severity: hcl.DiagError,
			Summary: "msgpack encoding failed", Detail: err.Error()})
	}
	return b, v, diags
}
