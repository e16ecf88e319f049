"""CapTalk on a render farm: the batch's job list on Ray, and templates for other managers.

- `farm.driver` (``./captalk.sh farm JOBS.json --out DIR``): runs a job list on Ray. Each
  generation worker is a Ray actor that loads the motion model once and serves many lines
  (`farm.generation`); the Blender steps (write the .blend, render the MP4) are Ray tasks
  that run the batch script (`scripts/captalk_batch.py --motion`) as a subprocess on the
  node (`farm.blender_step`). The driver itself needs neither bpy nor torch.
- `farm/templates/`: an Open Job Description template and a Flamenco job type that run
  the same batch script, one shard (``--shard I/N``) per task.

Every node needs this checkout at the same path (shared storage, as farms have) and the
job list's audio, the starting scene and --out reachable at the same paths.
"""
