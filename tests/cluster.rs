//! The cluster recipe in `tools/cluster/`, run locally with 3 shards: the Slurm submission
//! (through a stand-in `sbatch` that runs array tasks and dependent jobs as Slurm would, from the
//! command lines the script generates) and the Kubernetes Indexed Job's worker command both give
//! exactly the one-machine profile; score shards gather into the one-machine CSV.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use nac::model::synthetic::SyntheticModel;
use nac::model::weights::StorageDtype;
use nac::model::ArchSpec;
use nac::nac::ProfileData;

/// A stand-in for `sbatch`: `--array=0-K` runs the `--wrap` command once per task with
/// SLURM_ARRAY_TASK_ID set, `--dependency=afterok:ID` runs it only if job ID succeeded; prints
/// the job id as `--parsable` does.
const SBATCH: &str = r#"#!/usr/bin/env bash
set -uo pipefail
state=${FAKE_SLURM_STATE:?}
array= ; dep= ; wrap=
for a in "$@"; do
  case $a in
    --array=*) array=${a#--array=} ;;
    --dependency=afterok:*) dep=${a#--dependency=afterok:} ;;
    --wrap=*) wrap=${a#--wrap=} ;;
  esac
done
id=$(( $(cat "$state/next" 2>/dev/null || echo 100) + 1 )); echo $id > "$state/next"
if [ -n "$dep" ] && [ "$(cat "$state/$dep")" != ok ]; then echo failed > "$state/$id"; echo $id; exit 0; fi
status=ok
if [ -n "$array" ]; then
  for ((t = ${array%-*}; t <= ${array#*-}; t++)); do SLURM_ARRAY_TASK_ID=$t bash -c "$wrap" >&2 || status=failed; done
else
  bash -c "$wrap" >&2 || status=failed
fi
echo $status > "$state/$id"
echo $id
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/cluster").join(name)
}

#[test]
fn slurm_and_kubernetes_recipes_give_the_one_machine_profile() {
    let dir = common::temp_dir("cluster");
    let model = dir.join("wrn.safetensors");
    SyntheticModel::new(ArchSpec::WideResNet { depth: 10, width: 1 }, 3, 8).unwrap().save(&model, StorageDtype::F32).unwrap();
    let n = 20;
    let images: Vec<u8> = (0..n * 64).map(|i| ((i * 29 + i / 64 * 17) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let data = dir.join("set-images-idx3-ubyte");
    common::write_idx(&data, &images, n, &labels);
    let nac = env!("CARGO_BIN_EXE_nac");
    let job: Vec<String> = [
        "--model",
        model.to_str().unwrap(),
        "--data",
        &format!("idx:{}", data.display()),
        "--preprocessing",
        "pad:2,gray2rgb",
        "--balanced",
        "15",
        "--batch",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let whole = dir.join("whole.safetensors");
    run(Command::new(nac).arg("profile").args(&job).arg("--out").arg(&whole));
    let want = ProfileData::load(&whole).unwrap();

    // Slurm: the submission script with its generated sbatch command lines.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("sbatch"), SBATCH).unwrap();
    run(Command::new("chmod").arg("+x").arg(bin.join("sbatch")));
    let state = dir.join("slurm");
    std::fs::create_dir_all(&state).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let result = dir.join("slurm.safetensors");
    run(Command::new(script("slurm-submit.sh"))
        .args(["3", dir.join("slurm-parts").to_str().unwrap(), result.to_str().unwrap(), "profile"])
        .args(&job)
        .env("PATH", &path)
        .env("NAC", nac)
        .env("FAKE_SLURM_STATE", &state));
    let got = ProfileData::load(&result).unwrap();
    assert_eq!(got.counts, want.counts);
    assert_eq!(got.header, want.header);

    // Kubernetes: the Indexed Job's container command, once per completion index.
    let yaml = std::fs::read_to_string(script("k8s-indexed-job.yaml")).unwrap();
    assert!(yaml.contains("completionMode: Indexed") && yaml.contains("completions: 3") && yaml.contains("value: \"3\""));
    assert!(yaml.contains(r#"command: ["tools/cluster/nac-shard.sh", "/results", "profile","#));
    let parts = dir.join("k8s-parts");
    for index in 0..3 {
        run(Command::new(script("nac-shard.sh"))
            .arg(&parts)
            .arg("profile")
            .args(&job)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("NAC_SHARDS", "3")
            .env("NAC", nac));
    }
    let result = dir.join("k8s.safetensors");
    run(Command::new(script("nac-gather.sh")).arg(&parts).arg("profile").arg(&result).env("NAC_SHARDS", "3").env("NAC", nac));
    assert_eq!(ProfileData::load(&result).unwrap().counts, want.counts);

    // A large set scored the same way: CSV shards concatenated in order.
    let score: Vec<String> = [
        "--model",
        model.to_str().unwrap(),
        "--profile",
        whole.to_str().unwrap(),
        "--data",
        &format!("idx:{}", data.display()),
        "--preprocessing",
        "pad:2,gray2rgb",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let one = dir.join("one.csv");
    run(Command::new(nac).arg("score").args(&score).arg("--out").arg(&one));
    let parts = dir.join("score-parts");
    for index in 0..3 {
        run(Command::new(script("nac-shard.sh"))
            .arg(&parts)
            .arg("score")
            .args(&score)
            .env("NAC_SHARD_INDEX", index.to_string())
            .env("NAC_SHARDS", "3")
            .env("NAC", nac));
    }
    let gathered = dir.join("gathered.csv");
    run(Command::new(script("nac-gather.sh")).arg(&parts).arg("score").arg(&gathered).env("NAC_SHARDS", "3"));
    assert_eq!(std::fs::read_to_string(&gathered).unwrap(), std::fs::read_to_string(&one).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}
