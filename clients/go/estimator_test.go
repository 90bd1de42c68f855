package estimator

// Against a real estimatord started by StartEstimator ($ESTIMATORD; run through ctest's
// go_client_test, which also sets the cgo paths). Expected powers come from the embedded
// model's published weights (data/model), evaluated here with Kepler's formula.

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var bpf = []string{"bpf_cpu_time_ms", "bpf_page_cache_hit"}

type componentWeights struct {
	AllWeights struct {
		BiasWeight         float64 `json:"Bias_Weight"`
		NumericalVariables map[string]struct {
			Scale  float64 `json:"scale"`
			Weight float64 `json:"weight"`
		} `json:"Numerical_Variables"`
	} `json:"All_Weights"`
}

// keplerPower evaluates the embedded rapl AbsPower model's weights for one component.
func keplerPower(t *testing.T, component string, row []float64) float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "data", "model", "rapl-sysfs", "AbsPower",
		"SGDRegressorTrainer_0", "weights.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage // components, and model_name (a string)
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var w componentWeights
	if err := json.Unmarshal(doc[component], &w); err != nil {
		t.Fatalf("weights of %s: %v", component, err)
	}
	p := w.AllWeights.BiasWeight
	for i, name := range bpf {
		v := w.AllWeights.NumericalVariables[name]
		if v.Scale != 0 {
			p += v.Weight * row[i] / v.Scale
		}
	}
	return math.Max(p, 0)
}

func start(t *testing.T) *Estimator {
	t.Helper()
	if os.Getenv("ESTIMATORD") == "" {
		t.Skip("ESTIMATORD is not set: run through ctest (go_client_test)")
	}
	e, err := StartEstimator(EstimatorOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("StartEstimator: %v", err)
	}
	t.Cleanup(func() {
		if _, err := e.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return e
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestEstimateAnswersAsKeplersSidecar(t *testing.T) {
	e := start(t)
	values := [][]float64{{1200, 3}, {80, 0}, {0, 0}}
	resp, err := e.Estimate(&PowerRequest{Metrics: bpf, Values: values, OutputType: "AbsPower",
		Source: "intel_rapl"})
	if err != nil {
		t.Fatalf("Estimate: %v", err)
	}
	if resp.Msg != "" || resp.CoreRatio != 1 {
		t.Errorf("msg %q core_ratio %v", resp.Msg, resp.CoreRatio)
	}
	if resp.Model.Name != "SGDRegressorTrainer_0" || resp.Model.Source != "rapl-sysfs" {
		t.Errorf("model %+v", resp.Model)
	}
	for _, comp := range []string{"package", "core", "uncore", "dram"} {
		col, ok := resp.Powers[comp]
		if !ok || len(col) != len(values) {
			t.Fatalf("powers[%s] = %v", comp, col)
		}
		for r, row := range values {
			near(t, comp, col[r], keplerPower(t, comp, row))
		}
	}
	// Kepler's reply shape survives JSON.
	b, _ := json.Marshal(resp)
	var back struct {
		Powers map[string][]float64 `json:"powers"`
		Msg    string               `json:"msg"`
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Powers["package"]) != 3 {
		t.Errorf("json round trip: %s (%v)", b, err)
	}
}

func TestEstimateAcpiWithSystemValues(t *testing.T) {
	e := start(t)
	resp, err := e.Estimate(&PowerRequest{Metrics: bpf, Values: [][]float64{{500, 1}},
		OutputType: "AbsPower", Source: "acpi", SystemFeatures: []string{"cpu_architecture"},
		SystemValues: []string{"Sky Lake"}})
	if err != nil {
		t.Fatalf("Estimate: %v", err)
	}
	if len(resp.Powers) != 1 || len(resp.Powers["platform"]) != 1 {
		t.Errorf("powers %v", resp.Powers)
	}
}

func TestGetPowerIsPackagePlusDram(t *testing.T) {
	e := start(t)
	values := [][]float64{{1200, 3}, {80, 0}}
	got, err := e.GetPower("", bpf, values, nil, nil, nil, nil)
	if err != nil {
		t.Fatalf("GetPower: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	for r, row := range values {
		near(t, "total", got[r], keplerPower(t, "package", row)+keplerPower(t, "dram", row))
	}
}

func TestGetPowerSplitsMeasuredPowerWithTheRatioModel(t *testing.T) {
	e := start(t)
	features := []string{"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"}
	values := [][]float64{{300, 10, 5}, {100, 30, 15}}
	// Only dram is measured (8 W on one package): split by cache misses, 10 : 30.
	got, err := e.GetPower("Ratio", features, values, nil, []float64{8}, nil, nil)
	if err != nil {
		t.Fatalf("GetPower: %v", err)
	}
	near(t, "row 0", got[0], 2)
	near(t, "row 1", got[1], 6)
}

func TestErrorsCarryCodeAndMessage(t *testing.T) {
	e := start(t)
	resp, err := e.Estimate(&PowerRequest{ModelName: "SGDRegressorTrainer_0", Metrics: []string{"cpu_cycles"},
		Values: [][]float64{{1}}, OutputType: "AbsPower", Source: "rapl-sysfs"})
	var ee *Error
	if !errors.As(err, &ee) || ee.Code != CodeMissingFeatures {
		t.Fatalf("err = %v, want missing_features", err)
	}
	if resp == nil || resp.Msg == "" || resp.Powers == nil {
		t.Errorf("response on error: %+v (Msg set, Powers an empty map)", resp)
	}
	if ee.Code.String() != "missing_features" || !strings.Contains(ee.Message, "bpf_cpu_time_ms") {
		t.Errorf("error %q", ee.Error())
	}

	_, err = e.GetPower("", bpf, [][]float64{{1, 2}, {3}}, nil, nil, nil, nil)
	if !errors.As(err, &ee) || ee.Code != CodeInvalidArgument || !strings.Contains(ee.Message, "values[1]") {
		t.Errorf("ragged rows: %v", err)
	}
	_, err = e.Estimate(&PowerRequest{Metrics: bpf, Values: [][]float64{{1, 2}},
		SystemFeatures: []string{"cpu_architecture"}})
	if !errors.As(err, &ee) || ee.Code != CodeInvalidArgument {
		t.Errorf("system features without values: %v", err)
	}
	_, err = e.GetPower("", bpf, [][]float64{{math.NaN(), 2}}, nil, nil, nil, nil)
	if !errors.As(err, &ee) || ee.Code != CodeInvalidValue {
		t.Errorf("NaN: %v", err)
	}

	nobody, err := NewClient(Options{ShmName: "estimator-go-nobody", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nobody.Close()
	if err := nobody.Ping(0); !errors.As(err, &ee) || ee.Code != CodeUnavailable {
		t.Errorf("no daemon: %v", err)
	}
}

func TestStartEstimatorFailuresAndDestroy(t *testing.T) {
	if os.Getenv("ESTIMATORD") == "" {
		t.Skip("ESTIMATORD is not set: run through ctest (go_client_test)")
	}
	var ee *Error
	if _, err := StartEstimator(EstimatorOptions{Binary: "/nonexistent/estimatord"}); !errors.As(err, &ee) || ee.Code != CodeNotFound {
		t.Errorf("missing binary: %v", err)
	}
	if _, err := StartEstimator(EstimatorOptions{ExtraArgs: []string{"--model-dir", "/nonexistent"}, LogLevel: "off"}); !errors.As(err, &ee) || !strings.Contains(ee.Message, "exited with status 1") {
		t.Errorf("daemon refusing its arguments: %v", err)
	}

	e, err := StartEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := e.ShmName()
	if _, err := os.Stat("/dev/shm/" + name); err != nil {
		t.Errorf("segment: %v", err)
	}
	if e.Pid() <= 0 {
		t.Errorf("pid %d", e.Pid())
	}
	status, err := e.Destroy()
	if err != nil || status != 0 {
		t.Errorf("Destroy: status %d, %v", status, err)
	}
	if _, err := os.Stat("/dev/shm/" + name); !os.IsNotExist(err) {
		t.Errorf("segment left after Destroy: %v", err)
	}
	if _, err := e.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}
