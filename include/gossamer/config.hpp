// RunConfig: the validated, resolved configuration of one run. Every key is declared
// once in the schema (host/config_schema.cpp) with its type, default, range and meaning;
// validation, defaults, unknown-key suggestions and docs/CONFIG.md all come from it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gossamer/activations.hpp"

namespace gossamer {

struct DataConfig {
  std::string dataset;  // synthetic | fashion-mnist | mnist | idx | cifar10
  std::string path;
  std::string normalize;      // feature | none
  int64_t train_samples = 0;  // 0: all
  int64_t test_samples = 0;
  // synthetic
  std::string synthetic_kind;  // teacher | gaussian_mixture
  int64_t synthetic_train = 0, synthetic_test = 0;
  int synthetic_features = 0, synthetic_classes = 0, synthetic_teacher_hidden = 0;
  double synthetic_separation = 0, synthetic_label_noise = 0;
  int augment_crop = 0;  // padding of the random crop; 0: off
  bool augment_flip = false;
};

struct PartitionConfig {
  std::string kind;  // iid | dirichlet | shards
  double alpha = 0;
  int classes_per_worker = 0;
};

// One entry of model.layers (model.kind "cnn"), in order; a linear classifier to the classes
// follows the last. Spatial sizes: "same" padding, stride 1 or 2; pools are 2 x 2, stride 2.
struct CnnLayerConfig {
  std::string type;  // conv | act | maxpool | avgpool | residual | groupnorm | gap | linear
  int channels = 0;  // conv, residual: output channels; linear: outputs
  int groups = 0;    // groupnorm: groups of channels (dividing the channels)
  int kernel = 3;    // conv: k x k, odd
  int stride = 1;    // conv, residual: 1 or 2
};

struct ModelConfig {
  std::string kind = "mlp";  // mlp | cnn
  std::vector<CnnLayerConfig> layers;  // cnn
  std::vector<int> hidden;
  Activation activation = Activation::Relu;
  std::string activation_name;
  std::string init;  // kaiming | xavier | zeros
  bool same_init = true;
};

struct TopologyConfig {
  std::string name;
  std::string weights;  // uniform | metropolis
  bool shuffle = false;
  double probability = 0;  // erdos_renyi
  nlohmann::json matrix;   // custom: dense m x m
  nlohmann::json edges;    // custom: list of [i, j]
};

// algorithm.name, parsed once.
enum class Algorithm {
  Dsgd,      // decentralized SGD over the topology
  Csgd,      // centralized: every worker applies the mean gradient
  LocalSgd,  // local steps, then exact averaging
  CsgdSam,   // C-SGD with SAM (two gradient passes a step)
  CsgdAdsam  // C-SGD at w + eps, eps ~ N(0, sigma^2 I) (average-direction SAM)
};
const char* algorithm_name(Algorithm a);  // as in the config: "dsgd", ...

struct AlgorithmConfig {
  Algorithm kind = Algorithm::Dsgd;
  std::string form;  // default | atc (dsgd)
  int local_steps = 1;
  double sam_rho = 0;
  double adsam_sigma = 0;
  bool track_adsam = false;
  // The step perturbs W and restores it (SAM, average-direction SAM): the backend keeps a
  // saved copy of W. The equivalence tracker's ADSAM companion is a CsgdAdsam run.
  bool perturbs_weights() const { return kind == Algorithm::CsgdSam || kind == Algorithm::CsgdAdsam; }
  bool centralized() const { return kind == Algorithm::Csgd || perturbs_weights(); }
  // Whether a step mixes over the topology: C-SGD and its SAM variants average exactly, local
  // SGD steps alone and then averages exactly; only D-SGD gossips.
  bool gossips() const { return kind == Algorithm::Dsgd; }
};

struct OptimizerConfig {
  double lr = 0;
  int batch_size = 0;  // per worker
  double momentum = 0;
  bool nesterov = false;
  double weight_decay = 0;
  std::string schedule;            // constant | step | cosine
  std::vector<double> milestones;  // fractions of the run
  double gamma = 0;
  double min_lr_factor = 0;
  int64_t warmup_steps = 0;
  double warmup_fraction = 0;
  double warmup_start_factor = 0;
  std::string scaling;  // none | linear | sqrt
  int64_t base_batch = 0;
};

struct TrainConfig {
  int64_t steps = 0;
  double epochs = 0;
  int64_t eval_every = 0;
  bool eval_workers = true;
  int64_t check_every = 1;
  int64_t checkpoint_every = 0;
};

struct MetricsConfig {
  bool ensemble = false;
  bool smoothing = false;
};

struct CurvatureConfig {
  int64_t every = 0;
  std::vector<std::string> what;
  int64_t samples = 0;
  int probes = 0, topk = 0, lanczos_steps = 0, mc_samples = 0, sam_steps = 0;
  std::string method;
  int64_t power_iters = 0;
  double power_tol = 0, sigma = 0, sam_rho = 0;
  bool workers = false;
  int density_runs = 0, density_steps = 0, density_bins = 0;
  double density_width = 0;
  bool wants(const std::string& name) const;
};

// The processes of a multi-process run (gossamer run --rank --world --rendezvous): each holds
// the shards of its devices; rank 0 writes the run folder.
struct Processes {
  int rank = 0, world = 1;
  std::string rendezvous;        // the file on a shared filesystem that carries NCCL's id
  double timeout_seconds = 300;  // how long ranks > 0 wait for it
};

struct RunConfig {
  std::string name;
  uint64_t seed = 0;
  int workers = 0;
  DataConfig data;
  PartitionConfig partition;
  ModelConfig model;
  TopologyConfig topology;
  AlgorithmConfig algorithm;
  OptimizerConfig optimizer;
  TrainConfig train;
  MetricsConfig metrics;
  CurvatureConfig curvature;
  int shards = 1;           // CPU backend: shards of W's rows (a layout: not in config_hash)
  std::vector<int> devices; // CUDA backend: a shard per entry on that GPU (a layout, as shards)
  std::string transport;    // auto | copy | nccl: between the CUDA backend's shards (a layout)
  Processes processes;      // a multi-process run (the command line's, not the file's)
  std::string backend;      // auto | cpu | cuda
  std::string precision;    // float32 | float64
  std::string math;         // fp32 | tf32 (cuda backend GEMMs)
  nlohmann::json resolved;  // the whole config, defaults filled in
  std::string source;       // where it came from (load_config's source), for set-up errors
};

// Parse, apply `--set key.path=value` overrides, validate, fill defaults. `source` names
// the file in error messages, `overrides_from` where the overrides came from (a sweep's keys).
// Throws config_error naming the key, the value and what was expected.
RunConfig load_config(const nlohmann::json& user, const std::vector<std::string>& overrides,
                      const std::string& source, const std::string& overrides_from = "--set");
RunConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides);

// A JSON file read strictly (configs, sweeps): a config_error naming the path and `what` when it
// cannot be opened, is a directory, is not valid JSON, or has an object with a key twice.
nlohmann::json read_json_file(const std::string& path, const std::string& what);
nlohmann::ordered_json read_ordered_json_file(const std::string& path, const std::string& what);

// Markdown reference of every key (docs/CONFIG.md is generated from this).
std::string config_reference_markdown();

// A short stable hash of the resolved config (FNV-1a of its canonical dump), hex.
std::string config_hash(const nlohmann::json& resolved);

}  // namespace gossamer
