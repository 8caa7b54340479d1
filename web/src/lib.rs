//! finegrain's inference in a web page: [`finegrain::classify::Classifier`] on the browser's
//! WebGPU, exported to JavaScript with wasm-bindgen. The library's async core does the
//! work (`Gpu::new_async`, `Classifier::classify_with_maps_async`); this file only turns
//! bytes and results into JavaScript values. Nothing leaves the user's machine: the page
//! hands in the bytes of files it was given or fetched from its own folder.

use finegrain::checkpoint::Checkpoint;
use finegrain::classify::Classifier;
use finegrain::gpu::{Gpu, GpuOptions};
use finegrain::Precision;
use js_sys::{Array, Object, Reflect, Uint8Array};
use std::path::Path;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

fn js_err(e: finegrain::Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

struct Inner {
    gpu: Gpu,
    classifier: Classifier,
    precision: Precision,
}

/// A checkpoint opened for inference on the browser's GPU.
#[wasm_bindgen]
pub struct WebClassifier {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl WebClassifier {
    /// Open a finegrain checkpoint (the bytes of its `.safetensors` file; `name` names it
    /// in errors) on the browser's WebGPU adapter. It computes in the precision it was
    /// trained in where the adapter has `shader-f16`, else in f32.
    pub async fn open(name: String, bytes: Vec<u8>) -> Result<WebClassifier, JsValue> {
        let gpu = Gpu::new_async(&GpuOptions::default())
            .await
            .map_err(js_err)?;
        let ck = Checkpoint::from_bytes(Path::new(&name), bytes).map_err(js_err)?;
        let precision = match ck.precision() {
            Precision::Mixed if gpu.features.shader_f16 => Precision::Mixed,
            _ => Precision::F32,
        };
        let classifier =
            Classifier::from_checkpoint_with_precision(&gpu, &ck, 1, precision).map_err(js_err)?;
        Ok(WebClassifier {
            inner: Rc::new(Inner {
                gpu,
                classifier,
                precision,
            }),
        })
    }

    /// The adapter, its limits and features, in one line.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.inner.gpu.describe()
    }

    /// `f32` or `mixed`.
    #[wasm_bindgen(getter)]
    pub fn precision(&self) -> String {
        self.inner.precision.to_string()
    }

    /// The class names, in label order.
    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> Array {
        self.inner
            .classifier
            .classes()
            .iter()
            .map(|c| JsValue::from_str(c))
            .collect()
    }

    /// The network's input side in pixels.
    #[wasm_bindgen(getter, js_name = inputSize)]
    pub fn input_size(&self) -> usize {
        self.inner.classifier.preprocessing().width
    }

    /// Classify one image file (PNG or JPEG bytes; `name` names it in errors), prepared
    /// as the checkpoint's test images were. Resolves to `{ top: [{ class, name,
    /// probability, score }], cam }`, `top_k` classes most probable first; `cam` is a PNG
    /// (Uint8Array) of the input with the class maps of the `maps` most probable classes
    /// overlaid, or null when `maps` is 0.
    pub fn classify(
        &self,
        name: String,
        image: Vec<u8>,
        top_k: usize,
        maps: usize,
    ) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let clf = &inner.classifier;
            let input = clf
                .prepare_bytes(Path::new(&name), &image)
                .map_err(js_err)?;
            let mut results = clf
                .classify_with_maps_async(&inner.gpu, &input, top_k, maps)
                .await
                .map_err(js_err)?;
            let (prediction, class_maps) = results
                .pop()
                .ok_or_else(|| JsError::new("no result for the image"))?;
            let out = Object::new();
            let top: Array = prediction
                .top
                .iter()
                .map(|c| {
                    let o = Object::new();
                    set(&o, "class", c.class as u32);
                    set(&o, "name", c.name.as_str());
                    set(&o, "probability", c.probability);
                    set(&o, "score", c.score);
                    JsValue::from(o)
                })
                .collect();
            set(&out, "top", top);
            if maps > 0 {
                let picture = clf.cam_image(&input, &prediction, &class_maps);
                let mut png = Vec::new();
                picture
                    .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                    .map_err(|e| JsError::new(&format!("encoding the class-map PNG: {e}")))?;
                set(&out, "cam", Uint8Array::from(png.as_slice()));
            } else {
                set(&out, "cam", JsValue::NULL);
            }
            Ok(out.into())
        })
    }
}
