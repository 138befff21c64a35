//! Command-line arguments and dispatch. Each subcommand lives in its own
//! file and only calls the library.

mod bars;
mod bench;
mod case;
mod categories;
mod cohort;
mod common;
mod eval;
pub mod log;
mod manifest;
mod outputs;
mod prompt_args;
mod segment;
#[cfg(feature = "serve")]
mod serve;
mod weights_cmd;

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use segvol::error::Result;
use segvol::pipeline::prompt_frames::{Frame, UserBox, UserPoint};
use segvol::pipeline::zoom::PadMode;

#[derive(Parser, Debug)]
#[command(
    name = "segvol",
    version,
    about = "SegVol inference: universal and interactive 3D CT segmentation from text, box and point prompts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
    /// More messages: -v the pipeline's stages, -vv every zoom-in window.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Warnings and errors only, no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Segment a CT (NIfTI, or a DICOM series folder) from text, box and point prompts with
    /// zoom-out-zoom-in; or a cohort of CTs (several paths, a folder, a CSV manifest) with the
    /// model loaded once.
    Segment(Box<SegmentArgs>),
    /// Segment with prompts built from a ground-truth label map and report Dice.
    Eval(EvalArgs),
    /// Print a checkpoint's inventory and whether it is a SegVol checkpoint.
    Inspect {
        /// Checkpoint file (.bin, .pth, .safetensors) or folder.
        weights: PathBuf,
    },
    /// Write a checkpoint as a normalised float32 safetensors file.
    Convert {
        weights: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Time the encoder, the decoder and the whole pipeline on one device.
    Bench(BenchArgs),
    /// List the category names SegVol was trained on (the 25 M3D-Seg datasets' labels).
    Categories {
        /// Write them, with their datasets, as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write the synthetic test weights ("synth v2"): meaningless masks, for tests and benchmarks.
    /// Serve the model over HTTP to viewers (3D Slicer's MONAI Label extension).
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    SynthWeights {
        #[arg(long, default_value = "default")]
        config: String,
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Default. Pads the prompt map like the window image, so a single
    /// padded zoom-in window gets the box where the image is.
    Fixed,
    /// Reproduces the reference exactly, including its slip: the prompt map
    /// is not padded, so that box is shifted by the padding
    Faithful,
}

impl From<ModeArg> for PadMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Fixed => PadMode::Fixed,
            ModeArg::Faithful => PadMode::Faithful,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FrameArg {
    /// Voxel indices (i, j, k) of the CT file.
    Voxel,
    /// World coordinates in mm, through the CT's affine.
    World,
    /// The network's zoom-out frame (d, h, w), as the reference takes prompts.
    Zoom,
}

impl From<FrameArg> for Frame {
    fn from(f: FrameArg) -> Self {
        match f {
            FrameArg::Voxel => Frame::Voxel,
            FrameArg::World => Frame::World,
            FrameArg::Zoom => Frame::Zoom,
        }
    }
}

/// Model, device and pipeline options shared by `segment` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Checkpoint file or folder (with tokenizer.json and config.json when
    /// present). Default: BAAI/SegVol from the Hugging Face cache,
    /// downloaded once when missing.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// auto (CUDA when a driver and a GPU are present, else the CPU), cpu,
    /// cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// GPU precision: bf16 (default on GPU; f32 accumulation) or f32
    /// (parity mode). The CPU always computes in f32.
    #[arg(long)]
    pub precision: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value = "fixed")]
    pub mode: ModeArg,
    /// Stop after the zoom-out pass (one network forward per category).
    #[arg(long)]
    pub no_zoom_in: bool,
    /// Seed of the zoom-in point sampling (point prompts only).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Zoom-in windows per encoder batch.
    #[arg(long, default_value_t = 2)]
    pub window_batch: usize,
    /// Memory the run may use, e.g. 8G or 512M ("unlimited" turns the check
    /// off). Default: the memory available at start (MemAvailable). A
    /// volume whose estimated peak exceeds it is refused before its voxels
    /// are read.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
}

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// The CT: a .nii / .nii.gz file, a DICOM series folder, or the .dcm
    /// files of one series. Several CTs, or a folder of NIfTI files, make a
    /// cohort run (with --output-dir).
    #[arg(value_name = "CT", required_unless_present = "manifest")]
    pub inputs: Vec<PathBuf>,
    /// The DICOM series to read (SeriesInstanceUID) when the folder holds several.
    #[arg(long, value_name = "UID")]
    pub series: Option<String>,
    /// Output label map (.nii or .nii.gz), in the CT's geometry: 0/1 for one
    /// category, 1..K in the order given for several. One CT only.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Cohort run: the folder for each case's label map (named from its CT:
    /// NAME.nii.gz), its JSON (NAME.json), and the run's summary.json and
    /// summary.csv. Created when missing.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Cohort run from a CSV manifest, one case per row; columns: input
    /// (required), output, text, box, point, labels, frame (several values
    /// in one cell separated by ';'). Empty prompt cells take the command
    /// line's.
    #[arg(long, value_name = "CSV")]
    pub manifest: Option<PathBuf>,
    /// Cohort run: skip the cases whose outputs all exist (resume).
    #[arg(long)]
    pub skip_existing: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// A category by name, e.g. liver (repeatable).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// A box i0,j0,k0,i1,j1,k1 (two opposite corners, inclusive; repeatable).
    #[arg(long = "box", allow_hyphen_values = true, value_parser = prompt_args::parse_box)]
    pub boxes: Vec<UserBox>,
    /// A click i,j,k[,label] with label 1 (positive, default) or 0 (repeatable).
    #[arg(long = "point", allow_hyphen_values = true, value_parser = prompt_args::parse_point)]
    pub points: Vec<UserPoint>,
    #[arg(long, value_enum, default_value = "voxel")]
    pub frame: FrameArg,
    /// Names of the categories, comma separated (default: the texts).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Also write per-category probabilities (float32, K volumes).
    #[arg(long)]
    pub probabilities: Option<PathBuf>,
    /// Write a summary: voxel counts, volumes in ml, timings.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub outputs: outputs::OutputArgs,
    /// Also write a DICOM Segmentation (.dcm, one segment per category)
    /// referencing the input series (DICOM input only).
    #[arg(long, value_name = "OUT.dcm")]
    pub dicom_seg: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PromptKind {
    Box,
    Point,
    Text,
    #[value(name = "box+text")]
    BoxText,
    #[value(name = "point+text")]
    PointText,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    pub ct: PathBuf,
    /// Ground-truth label map in the CT's geometry.
    #[arg(long)]
    pub labels_from: PathBuf,
    /// A class as VALUE=NAME, e.g. 5=liver (repeatable).
    #[arg(long = "class", required = true)]
    pub classes: Vec<String>,
    #[arg(long, value_enum, default_value = "box+text")]
    pub prompt: PromptKind,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Write the predicted label map too.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(feature = "serve")]
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (localhost by default: other machines cannot connect).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the chosen address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Require this token on every call (Authorization: Bearer <token>).
    #[arg(long, env = "SEGVOL_SERVE_TOKEN")]
    pub token: Option<String>,
    /// Sessions held at once (uploaded images count as sessions).
    #[arg(long, default_value_t = 64)]
    pub max_sessions: usize,
    /// Largest request body, e.g. 1G (413 above).
    #[arg(long, value_name = "SIZE", default_value = "1G")]
    pub max_upload: String,
    /// Memory for cached image embeddings summed over sessions; the least
    /// recently used sessions' embeddings are freed above it.
    #[arg(long, value_name = "SIZE", default_value = "4G")]
    pub session_memory: String,
    /// Seconds without a request after which a session is removed.
    #[arg(long, default_value_t = 3600)]
    pub idle_timeout: u64,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Config of the synthetic weights when --weights is not given.
    #[arg(long, default_value = "default")]
    pub config: String,
    /// A CT to run the pipeline on (default: a synthetic phantom).
    #[arg(long)]
    pub ct: Option<PathBuf>,
    /// Phantom size X,Y,Z when no --ct is given.
    #[arg(long, value_delimiter = ',', default_value = "192,192,48")]
    pub phantom: Vec<usize>,
    #[arg(long, default_value = "liver")]
    pub text: String,
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Segment(a) => segment::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Inspect { weights } => weights_cmd::inspect(&weights),
        Command::Convert { weights, output } => weights_cmd::convert(&weights, &output),
        Command::SynthWeights { config, output } => weights_cmd::synth(&config, &output),
        Command::Categories { json } => categories::run(json.as_deref()),
        #[cfg(feature = "serve")]
        Command::Serve(a) => serve::run(a),
    }
}

/// Messages are one line by construction; this keeps it so when one quotes
/// text that holds a newline (a file name, a JSON error): a batch log keeps
/// one line per failure.
pub fn one_line(msg: &str) -> String {
    msg.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
