//! Twin of `shaders/conv2d.wgsl`: direct loops in f64, same layouts (x NHWC, w HWIO, y NHWC).

use crate::kernels::conv2d::Conv2dShape;

/// Calls `f(x index, w index, y index)` for every multiply-add of the convolution (taps that
/// fall in the zero padding are skipped). All three twins are this one loop nest.
fn for_each_mac(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (s.oh(), s.ow());
    for n in 0..s.n {
        for oy in 0..oh {
            for ox in 0..ow {
                let yb = ((n * oh + oy) * ow + ox) * s.cout;
                for ky in 0..s.kh {
                    let Some(iy) = (oy * s.stride + ky).checked_sub(s.pad).filter(|&v| v < s.h)
                    else {
                        continue;
                    };
                    for kx in 0..s.kw {
                        let Some(ix) = (ox * s.stride + kx).checked_sub(s.pad).filter(|&v| v < s.w)
                        else {
                            continue;
                        };
                        let xb = ((n * s.h + iy) * s.w + ix) * s.cin;
                        let wb = (ky * s.kw + kx) * s.cin * s.cout;
                        for ci in 0..s.cin {
                            for co in 0..s.cout {
                                f(xb + ci, wb + ci * s.cout + co, yb + co);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn numel(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

/// y[n, oy, ox, co] = sum_{ky, kx, ci} x[n, oy*s - pad + ky, ox*s - pad + kx, ci] w[ky, kx, ci, co]
/// (zero outside the input).
pub fn conv2d_forward(s: &Conv2dShape, x: &[f64], w: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), numel(s.x_shape()), "conv2d_forward: x length");
    assert_eq!(w.len(), numel(s.w_shape()), "conv2d_forward: w length");
    let mut y = vec![0.0; numel(s.y_shape())];
    for_each_mac(s, |xi, wi, yi| y[yi] += x[xi] * w[wi]);
    y
}

/// dx = d(sum y * dy)/dx: every x element collects dy * w over the outputs it fed.
pub fn conv2d_backward_data(s: &Conv2dShape, dy: &[f64], w: &[f64]) -> Vec<f64> {
    assert_eq!(
        dy.len(),
        numel(s.y_shape()),
        "conv2d_backward_data: dy length"
    );
    assert_eq!(
        w.len(),
        numel(s.w_shape()),
        "conv2d_backward_data: w length"
    );
    let mut dx = vec![0.0; numel(s.x_shape())];
    for_each_mac(s, |xi, wi, yi| dx[xi] += dy[yi] * w[wi]);
    dx
}

/// dw = d(sum y * dy)/dw: every weight collects x * dy over all output pixels.
pub fn conv2d_backward_weight(s: &Conv2dShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
    assert_eq!(
        x.len(),
        numel(s.x_shape()),
        "conv2d_backward_weight: x length"
    );
    assert_eq!(
        dy.len(),
        numel(s.y_shape()),
        "conv2d_backward_weight: dy length"
    );
    let mut dw = vec![0.0; numel(s.w_shape())];
    for_each_mac(s, |xi, wi, yi| dw[wi] += x[xi] * dy[yi]);
    dw
}
