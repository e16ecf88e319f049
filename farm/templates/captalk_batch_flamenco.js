// SPDX-License-Identifier: GPL-3.0-or-later
//
// CapTalk batch as a Flamenco 3 job type: one task per shard of a CapTalk job list, each
// running Blender headless with the batch script (scripts/captalk_batch.py --shard I/N),
// resumable through --skip-existing. Install: copy into the Flamenco Manager's
// `scripts/` folder. Every worker needs the CapTalk checkout, the job list's files and the
// output folder at the same paths (Flamenco's shared storage).
//
// Checked here by running compileJob under Node with a stub `author`
// (tests/test_farm_templates.py); not run on a real Flamenco farm yet.

const JOB_TYPE = {
  label: "CapTalk Batch",
  description: "Speech-driven head animation for every line of a CapTalk job list",
  settings: [
    { key: "jobs_file", type: "string", subtype: "file_path", required: true,
      description: "The job list (JSON; format in model/core/batch_jobs.py)" },
    { key: "out_dir", type: "string", subtype: "dir_path", required: true,
      description: "Where each line's .blend, _motion.npz, .mp4 and manifest.jsonl go" },
    { key: "captalk_root", type: "string", subtype: "dir_path", required: true,
      description: "The CapTalk checkout (holds scripts/captalk_batch.py)" },
    { key: "blendfile", type: "string", subtype: "file_path", required: false,
      description: "Scene every line starts from (empty: an empty scene)" },
    { key: "checkpoint", type: "string", subtype: "dir_path", required: false,
      description: "Motion model checkpoint folder (empty: the bundled default)" },
    { key: "shards", type: "int32", default: 4, required: true,
      description: "How many tasks the job list is split into (by a hash of the job names)" },
    { key: "render", type: "bool", default: true, description: "Render each line's MP4 preview" },
  ],
};

function compileJob(job) {
  const settings = job.settings;
  const shards = settings.shards;
  if (!Number.isInteger(shards) || shards < 1) {
    throw `shards must be a whole number of at least 1, got ${shards}`;
  }
  const script = path.join(settings.captalk_root, "scripts", "captalk_batch.py");
  for (let shard = 1; shard <= shards; shard++) {
    const args = ["--python", script, "--",
                  "--jobs", settings.jobs_file, "--out", settings.out_dir,
                  "--shard", `${shard}/${shards}`, "--skip-existing",
                  settings.render ? "--render" : "--no-render"];
    if (settings.checkpoint) {
      args.push("--checkpoint", settings.checkpoint);
    }
    const task = author.Task(`captalk-shard-${shard}-of-${shards}`, "blender");
    task.addCommand(author.Command("blender-render", {
      exe: "{blender}",
      exeArgs: "{blenderArgs}",
      argsBefore: [],
      blendfile: settings.blendfile || "",
      args: args,
    }));
    job.addTask(task);
  }
}
