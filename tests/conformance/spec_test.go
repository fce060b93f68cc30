package conformance

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// specFromJSON builds a hand-made hclspec.Spec message from protojson text.
func specFromJSON(t *testing.T, js string) hcldec.Spec {
	t.Helper()
	m, err := NewMessage(SpecPkg+"Spec", js)
	if err != nil {
		t.Fatal(err)
	}
	s, diags := ConvertSpec(m)
	if diags.HasErrors() {
		t.Fatalf("convert %s: %v", js, diags)
	}
	return s
}

func convertErr(t *testing.T, js string) hcl.Diagnostics {
	t.Helper()
	m, err := NewMessage(SpecPkg+"Spec", js)
	if err != nil {
		t.Fatal(err)
	}
	_, diags := ConvertSpec(m)
	if !diags.HasErrors() {
		t.Fatalf("convert %s: want an error, got none", js)
	}
	return diags
}

func decodeText(t *testing.T, spec hcldec.Spec, src string) (cty.Value, hcl.Diagnostics) {
	t.Helper()
	body, diags := ConfigBlockBody(src)
	if diags.HasErrors() {
		t.Fatalf("parse: %v", diags)
	}
	return DecodeBody(body, spec)
}

// A raw_exec-like schema: Default+Literal, implied names, required attrs.
const rawExecLike = `{"object": {"attributes": {
  "enabled": {"default": {"primary": {"Attr": {"name": "enabled", "type": "bool"}},
                          "default": {"literal": {"value": "false"}}}},
  "mode":    {"default": {"primary": {"Attr": {"name": "mode", "type": "string"}},
                          "default": {"literal": {"value": "upper(\"bridge\")"}}}},
  "command": {"Attr": {"type": "string", "required": true}},
  "args":    {"Attr": {"type": "list(string)"}},
  "limits":  {"Attr": {"type": "map(number)"}},
  "pair":    {"array": {"values": [{"literal": {"value": "1"}}, {"literal": {"value": "\"x\""}}]}}
}}}`

func TestConverterObjectAttrDefaultLiteral(t *testing.T) {
	spec := specFromJSON(t, rawExecLike)
	v, diags := decodeText(t, spec, `command = "/bin/true"
args = ["a", "b"]
limits = { cpu = 2 }
`)
	if diags.HasErrors() {
		t.Fatalf("decode: %v", diags)
	}
	if got := v.GetAttr("enabled"); !got.RawEquals(cty.False) {
		t.Errorf("enabled = %#v, want default false", got)
	}
	if got := v.GetAttr("mode"); !got.RawEquals(cty.StringVal("BRIDGE")) {
		t.Errorf("mode = %#v, want literal upper(\"bridge\")", got)
	}
	if got := v.GetAttr("command"); !got.RawEquals(cty.StringVal("/bin/true")) {
		t.Errorf("command (implied name) = %#v", got)
	}
	if got := v.GetAttr("args"); !got.RawEquals(cty.ListVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")})) {
		t.Errorf("args = %#v", got)
	}
	if got := v.GetAttr("limits").Type(); !got.Equals(cty.Map(cty.Number)) {
		t.Errorf("limits type = %#v", got)
	}
	if got := v.GetAttr("pair").Type(); !got.Equals(cty.Tuple([]cty.Type{cty.Number, cty.String})) {
		t.Errorf("pair type = %#v", got)
	}
	if _, err := EncodeValue(v); err != nil {
		t.Errorf("msgpack: %v", err)
	}

	_, diags = decodeText(t, spec, `args = []`)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "command") {
		t.Errorf("missing required attribute: want a diagnostic naming command, got %v", diags)
	}
	_, diags = decodeText(t, spec, `command = ["x"]`)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "command") {
		t.Errorf("wrong type: want a diagnostic naming command, got %v", diags)
	}
	_, diags = decodeText(t, spec, "command = \"x\"\nbogus = 1\n")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Unsupported argument") {
		t.Errorf("unknown key: want Unsupported argument, got %v", diags)
	}
}

func TestConverterBlocks(t *testing.T) {
	spec := specFromJSON(t, `{"object": {"attributes": {
  "auth":    {"block_value": {"nested": {"object": {"attributes": {"user": {"Attr": {"type": "string"}}}}}}},
  "labels":  {"block_attrs": {"type": "string"}},
  "mount":   {"block_list": {"max_items": 2, "nested": {"object": {"attributes": {"src": {"Attr": {"type": "string"}}}}}}},
  "tag":     {"block_set": {"nested": {"object": {"attributes": {"v": {"Attr": {"type": "number"}}}}}}},
  "service": {"block_map": {"labels": ["name"], "nested": {"object": {"attributes": {"port": {"Attr": {"type": "number"}}}}}}}
}}}`)
	v, diags := decodeText(t, spec, `
auth { user = "root" }
labels { a = "1" }
mount { src = "/a" }
mount { src = "/b" }
tag { v = 1 }
service "web" { port = 80 }
`)
	if diags.HasErrors() {
		t.Fatalf("decode: %v", diags)
	}
	if got := v.GetAttr("auth").GetAttr("user"); !got.RawEquals(cty.StringVal("root")) {
		t.Errorf("auth.user = %#v", got)
	}
	if got := v.GetAttr("labels").Index(cty.StringVal("a")); !got.RawEquals(cty.StringVal("1")) {
		t.Errorf("labels.a = %#v", got)
	}
	if n := v.GetAttr("mount").LengthInt(); n != 2 {
		t.Errorf("mount count = %d", n)
	}
	if n := v.GetAttr("tag").LengthInt(); n != 1 {
		t.Errorf("tag count = %d", n)
	}
	if got := v.GetAttr("service").Index(cty.StringVal("web")).GetAttr("port"); !got.RawEquals(cty.NumberIntVal(80)) {
		t.Errorf("service.web.port = %#v", got)
	}
	_, diags = decodeText(t, spec, "mount { src = \"/a\" }\nmount { src = \"/b\" }\nmount { src = \"/c\" }\n")
	if !diags.HasErrors() {
		t.Errorf("max_items=2 with 3 blocks: want an error")
	}
}

func TestConverterFailures(t *testing.T) {
	cases := map[string]struct{ spec, want string }{
		"attr without name inside default": {
			`{"default": {"primary": {"Attr": {"type": "string"}}, "default": {"literal": {"value": "\"x\""}}}}`,
			"Missing name"},
		"attr without name inside object default": {
			`{"object": {"attributes": {"x": {"default": {"primary": {"Attr": {"type": "bool"}},
			  "default": {"literal": {"value": "true"}}}}}}}`,
			"Missing name"},
		"block_map without labels": {
			`{"block_map": {"name": "svc", "nested": {"object": {}}}}`, "label"},
		"empty type expression": {`{"Attr": {"name": "x"}}`, ""},
		"bad type expression":   {`{"Attr": {"name": "x", "type": "lizt(string)"}}`, ""},
		"unknown literal function": {
			`{"literal": {"value": "timestamp()"}}`, "timestamp"},
		"block without nested": {`{"block_value": {"name": "b"}}`, "nested"},
		"empty spec":           {`{}`, ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			diags := convertErr(t, c.spec)
			if c.want != "" && !strings.Contains(diags.Error(), c.want) {
				t.Errorf("diagnostics %q do not mention %q", diags.Error(), c.want)
			}
		})
	}
}

func TestConfigBlockBody(t *testing.T) {
	spec := specFromJSON(t, `{"object": {"attributes": {"x": {"default": {
	  "primary": {"Attr": {"name": "x", "type": "string"}}, "default": {"literal": {"value": "\"d\""}}}}}}}`)
	b, v, diags := EncodeHCL(`plugin "rkt" { args = [] }`, spec, "plugin", "config")
	if diags.HasErrors() || len(b) == 0 {
		t.Fatalf("absent config block: %v", diags)
	}
	if !v.GetAttr("x").RawEquals(cty.StringVal("d")) {
		t.Errorf("absent config block should decode to defaults, got %#v", v)
	}
	_, v, diags = EncodeHCL("plugin \"rkt\" {\n  config {\n    x = \"set\"\n  }\n}\n", spec, "plugin", "config")
	if diags.HasErrors() || !v.GetAttr("x").RawEquals(cty.StringVal("set")) {
		t.Errorf("config block: %#v %v", v, diags)
	}
}
