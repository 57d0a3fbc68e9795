"""The model: loading (`load`) and the one table of FFN families (`ffn`) that every other
module asks where neuron i's gate row, up row and down column live."""
