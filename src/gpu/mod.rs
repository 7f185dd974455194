//! GPU runtime: adapter choice, device creation, buffers and readback.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// How to choose the adapter. Empty fields mean "best available".
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backend list as in `WGPU_BACKEND`: `vulkan`, `metal`, `dx12`, `gl` (comma-separated).
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name (e.g. `nvidia`, `llvmpipe`).
    pub adapter: Option<String>,
    /// Compile the kernels with the shader compiler's runtime bounds checks. Off by default:
    /// the kernels are validated to stay in bounds (every read guarded or within a padded
    /// buffer, tested against the CPU reference), and the checks cost 1.3-1.45× on lavapipe
    /// (`benches/NOTES.md`, version 6). On for debugging a kernel.
    pub shader_checks: bool,
}

impl GpuOptions {
    /// Reads `NAC_BACKEND`, `NAC_ADAPTER` and `NAC_SHADER_CHECKS` (set and not `0`: checks on).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        GpuOptions {
            backend: var("NAC_BACKEND"),
            adapter: var("NAC_ADAPTER"),
            shader_checks: var("NAC_SHADER_CHECKS").is_some_and(|v| v.trim() != "0"),
        }
    }

    /// Flags given on the command line win over the environment.
    pub fn with_overrides(mut self, backend: Option<String>, adapter: Option<String>) -> Self {
        if backend.is_some() {
            self.backend = backend;
        }
        if adapter.is_some() {
            self.adapter = adapter;
        }
        self
    }

    fn backends(&self) -> Result<wgpu::Backends> {
        match &self.backend {
            None => Ok(wgpu::Backends::all() - wgpu::Backends::BROWSER_WEBGPU),
            Some(list) => {
                let b = wgpu::Backends::from_comma_list(list);
                if b.is_empty() {
                    Err(Error::Input(format!("unknown backend `{list}`; expected vulkan, metal, dx12 or gl")))
                } else {
                    Ok(b)
                }
            }
        }
    }
}

const NO_ADAPTER_HELP: &str = "install a GPU driver with Vulkan, Metal or DX12 support; on a headless Linux \
box without a GPU, `apt-get install mesa-vulkan-drivers` provides lavapipe, a software Vulkan device";

/// Optional features used when present: timestamps for benchmarks, subgroups and f16 for
/// faster kernel variants.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16
}

/// Preference order: discrete, integrated, virtual, CPU.
fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn instance(options: &GpuOptions) -> Result<wgpu::Instance> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = options.backends()?;
    Ok(wgpu::Instance::new(desc))
}

/// Every adapter the instance sees, best first.
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<wgpu::Adapter>> {
    let inst = instance(options)?;
    let mut adapters = pollster::block_on(inst.enumerate_adapters(options.backends()?));
    adapters.sort_by_key(|a| type_rank(a.get_info().device_type));
    Ok(adapters)
}

/// A human-readable description of one adapter: backend, type, driver, limits and features.
pub fn describe_adapter(adapter: &wgpu::Adapter) -> String {
    let info = adapter.get_info();
    let l = adapter.limits();
    let f = adapter.features();
    let mut s = String::new();
    s.push_str(&format!("{}\n", info.name));
    s.push_str(&format!("  backend: {:?}, type: {:?}\n", info.backend, info.device_type));
    s.push_str(&format!("  driver: {} ({})\n", info.driver, info.driver_info));
    s.push_str(&format!("  vendor: 0x{:04x}, device: 0x{:04x}\n", info.vendor, info.device));
    s.push_str(&format!(
        "  limits: max_storage_buffer_binding_size {} MiB, max_buffer_size {} MiB, max_compute_workgroups_per_dimension {}, \
max_compute_invocations_per_workgroup {}, max_compute_workgroup_storage_size {} KiB, max_storage_buffers_per_shader_stage {}\n",
        l.max_storage_buffer_binding_size >> 20,
        l.max_buffer_size >> 20,
        l.max_compute_workgroups_per_dimension,
        l.max_compute_invocations_per_workgroup,
        l.max_compute_workgroup_storage_size >> 10,
        l.max_storage_buffers_per_shader_stage,
    ));
    let names: Vec<String> = f.iter_names().map(|(n, _)| n.to_string()).collect();
    s.push_str(&format!("  features: {}\n", if names.is_empty() { "(none)".to_string() } else { names.join(", ") }));
    s
}

/// The device and queue everything runs on, with the adapter's facts.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// See [`GpuOptions::shader_checks`].
    shader_checks: bool,
    errors: Arc<Mutex<Vec<String>>>,
}

/// The error list, even if a thread panicked while holding it (the list stays valid).
fn lock(errors: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gpu {
    /// Opens the best adapter (or the one `options` names) with its own limits and the
    /// optional features it has.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let adapters = list_adapters(options)?;
        if adapters.is_empty() {
            let what = options.backend.as_deref().map(|b| format!(" for backend `{b}`")).unwrap_or_default();
            return Err(Error::NoAdapter(format!("wgpu found no adapter{what}; {NO_ADAPTER_HELP}")));
        }
        let adapter = match &options.adapter {
            None => adapters.into_iter().next().unwrap(),
            Some(want) => {
                let lower = want.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&lower))
                    .ok_or_else(|| Error::NoAdapter(format!("no adapter name contains `{want}`; available: {}", names.join(", "))))?
            }
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wanted_features();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("nac"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("creating a device on {}: {e}", info.name)))?;
        // Validation errors, out-of-memory and a lost device are collected instead of
        // panicking, and surfaced by `check_while`.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| lock(&sink).push(e.to_string())));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, message| lock(&sink).push(format!("the device was lost ({reason:?}): {message}")));
        Ok(Gpu { device, queue, info, limits, features, shader_checks: options.shader_checks, errors })
    }

    /// Returns the first GPU error recorded since the last check, saying it happened while
    /// doing `what`.
    pub fn check_while(&self, what: &str) -> Result<()> {
        let mut errors = lock(&self.errors);
        if errors.is_empty() {
            return Ok(());
        }
        let first = errors.remove(0);
        errors.clear();
        Err(Error::Gpu(format!("while {what} on {}: {first}", self.info.name)))
    }

    /// Records an error for the next `check_while` (a request refused before reaching wgpu).
    fn refuse(&self, message: String) {
        lock(&self.errors).push(message);
    }

    /// `bytes` rounded up as buffers are created, or 16 bytes and a recorded error when the
    /// request exceeds the adapter's `max_buffer_size` (wgpu would fail it anyway, later and
    /// without saying which buffer).
    fn buffer_size(&self, label: &str, bytes: u64) -> u64 {
        let size = bytes.max(16).next_multiple_of(4);
        if size > self.limits.max_buffer_size {
            self.refuse(format!(
                "buffer `{label}` needs {size} bytes, over this adapter's max_buffer_size of {} bytes",
                self.limits.max_buffer_size
            ));
            return 16;
        }
        size
    }

    /// Blocks until every submitted command buffer has finished.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))
    }

    /// Largest single storage binding, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    pub fn max_workgroups_per_dim(&self) -> u32 {
        self.limits.max_compute_workgroups_per_dimension
    }

    /// A WGSL module of the engine's kernels, with runtime checks only if
    /// [`GpuOptions::shader_checks`] asked for them.
    pub fn shader_module(&self, label: &str, code: std::borrow::Cow<'_, str>) -> wgpu::ShaderModule {
        let desc = wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(code) };
        if self.shader_checks {
            return self.device.create_shader_module(desc);
        }
        // SAFETY: every read and write of the engine's kernels is guarded by its bounds or falls
        // inside a buffer padded for it (the direct conv's weight tail), so no invocation
        // indexes past a binding; the kernel tests hold every kernel to the CPU reference.
        unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    }

    /// A storage buffer of `bytes` (at least 16), usable as copy source and destination.
    pub fn storage_buffer(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: self.buffer_size(label, bytes),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data` (padded to at least 16 bytes).
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> wgpu::Buffer {
        self.upload(label, data)
    }

    /// A storage buffer holding `data` of any plain type (padded to at least 16 bytes).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes = std::mem::size_of_val(data) as u64;
        if self.buffer_size(label, bytes) < bytes {
            return self.storage_buffer(label, 16); // refused and recorded
        }
        let buffer = self.storage_buffer(label, bytes);
        self.write(&buffer, bytemuck::cast_slice(data));
        buffer
    }

    pub fn uniform_buffer(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: self.buffer_size(label, bytes.len() as u64),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.write(&buffer, bytes);
        buffer
    }

    /// Queues `bytes` (padded to a multiple of 4) into the start of `buffer`. Buffers are filled
    /// by the queue rather than mapped at creation: on a lost device a mapped creation panics
    /// inside wgpu, a queued write only records an error.
    fn write(&self, buffer: &wgpu::Buffer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(buffer, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer, 0, &padded);
        }
    }

    /// A mappable buffer to copy results into for reading back.
    pub fn readback_buffer(&self, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: self.buffer_size("readback", bytes),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Waits for all submitted work, maps the readback buffers and returns their first
    /// `len` f32 values each.
    pub fn read_back(&self, buffers: &[(&wgpu::Buffer, usize)]) -> Result<Vec<Vec<f32>>> {
        let status = Arc::new(Mutex::new(Vec::new()));
        for (buffer, _) in buffers {
            let s = status.clone();
            buffer.map_async(wgpu::MapMode::Read, .., move |r| s.lock().unwrap().push(r));
        }
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        self.check_while("computing results to read back")?;
        for r in status.lock().unwrap().iter() {
            r.clone().map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        }
        let mut out = Vec::with_capacity(buffers.len());
        for (buffer, len) in buffers {
            {
                let view = buffer.get_mapped_range(..).map_err(|e| Error::Gpu(format!("reading a mapped buffer: {e}")))?;
                out.push(bytemuck::cast_slice::<u8, f32>(&view[..len * 4]).to_vec());
            }
            buffer.unmap();
        }
        Ok(out)
    }

    /// Copies `len` f32 values of a storage buffer to the host (one submit, one wait).
    pub fn read_f32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let staging = self.readback_buffer(len as u64 * 4);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, (len as u64 * 4).next_multiple_of(4).max(4));
        self.queue.submit([enc.finish()]);
        Ok(self.read_back(&[(&staging, len)])?.remove(0))
    }

    /// Copies `len` u32 values of a storage buffer to the host.
    pub fn read_u32(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<u32>> {
        Ok(self.read_f32(buffer, len)?.into_iter().map(f32::to_bits).collect())
    }
}
