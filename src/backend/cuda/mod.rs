//! CUDA backend (kernels in `kernels/*.cu`, driven through cudarc).
